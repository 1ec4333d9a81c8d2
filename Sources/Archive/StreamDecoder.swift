import CISAL
import CZstd

/// Produces decompressed bytes from an `InputReader`.
protocol StreamDecoder: AnyObject {
    /// Fills `buffer` as far as possible; returns fewer bytes only at the end of the stream (0 = done).
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

func makeDecoder(_ compression: LayerCompression, input: InputReader) -> StreamDecoder {
    switch compression {
    case .none: return PassthroughDecoder(input)
    case .gzip: return GzipDecoder(input)
    case .zstd: return ZstdDecoder(input)
    }
}

let compressedReadSize = 1 << 20

final class PassthroughDecoder: StreamDecoder {
    private let input: InputReader
    init(_ input: InputReader) { self.input = input }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var filled = 0
        while filled < buffer.count {
            let n = try input.read(into: buffer.baseAddress! + filled, capacity: buffer.count - filled)
            if n == 0 { break }
            filled += n
        }
        return filled
    }
}

/// gzip via ISA-L `isal_inflate`, supporting multi-member streams and trailing zero padding.
final class GzipDecoder: StreamDecoder {
    private let input: InputReader
    private let state: UnsafeMutablePointer<inflate_state>
    private let inBuffer: UnsafeMutablePointer<UInt8>
    private var inLength = 0
    private var bufferStart: Int64 = 0  // compressed offset of inBuffer[0]
    private var inputEOF = false
    private var sawInput = false
    private var done = false
    private var trailingZeros = false

    init(_ input: InputReader) {
        self.input = input
        state = .allocate(capacity: 1)
        inBuffer = .allocate(capacity: compressedReadSize)
        isal_inflate_init(state)
        state.pointee.crc_flag = UInt32(ISAL_GZIP)
    }

    deinit {
        state.deallocate()
        inBuffer.deallocate()
    }

    private var compressedOffset: Int64 { bufferStart + Int64(inLength - Int(state.pointee.avail_in)) }

    private func refill() throws {
        bufferStart += Int64(inLength)
        inLength = try input.read(into: inBuffer, capacity: compressedReadSize)
        if inLength == 0 { inputEOF = true } else { sawInput = true }
        state.pointee.next_in = inBuffer
        state.pointee.avail_in = UInt32(inLength)
    }

    private func corrupt(_ detail: String) -> ArchiveError {
        ArchiveError(.corruptCompressedData(format: "gzip", offset: compressedOffset, detail: detail))
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var produced = 0
        while produced < buffer.count && !done {
            if state.pointee.avail_in == 0 && !inputEOF { try refill() }
            if trailingZeros || state.pointee.block_state == ISAL_BLOCK_FINISH {
                // Member complete: more members may follow (multi-member gzip), or zero padding.
                if state.pointee.avail_in == 0 {
                    if inputEOF { done = true }
                    continue
                }
                let next = state.pointee.next_in!
                if trailingZeros || next.pointee == 0 {
                    trailingZeros = true
                    let avail = Int(state.pointee.avail_in)
                    for i in 0..<avail where next[i] != 0 {
                        state.pointee.next_in = next + i
                        state.pointee.avail_in = UInt32(avail - i)
                        throw corrupt("garbage after gzip stream")
                    }
                    state.pointee.next_in = next + avail
                    state.pointee.avail_in = 0
                    continue
                }
                let avail = state.pointee.avail_in
                if next[0] != 0x1f || (avail >= 2 && next[1] != 0x8b) {
                    throw corrupt("garbage after gzip member (no gzip magic)")
                }
                isal_inflate_reset(state)
                state.pointee.crc_flag = UInt32(ISAL_GZIP)
                state.pointee.next_in = next
                state.pointee.avail_in = avail
            }
            let inBefore = state.pointee.avail_in
            state.pointee.next_out = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self) + produced
            state.pointee.avail_out = UInt32(buffer.count - produced)
            let rc = isal_inflate(state)
            if rc < 0 { throw corrupt(GzipDecoder.describe(rc)) }
            let out = buffer.count - produced - Int(state.pointee.avail_out)
            produced += out
            if out == 0 && state.pointee.avail_in == inBefore && state.pointee.block_state != ISAL_BLOCK_FINISH
                && state.pointee.avail_in == 0 && inputEOF
            {
                throw ArchiveError(.truncated(detail: sawInput
                    ? "gzip stream ends in the middle of a member at compressed offset \(compressedOffset) (truncated or corrupt)"
                    : "empty gzip stream"))
            }
        }
        return produced
    }

    static func describe(_ rc: Int32) -> String {
        switch rc {
        case -1: return "invalid deflate block"
        case -2: return "invalid symbol"
        case -3: return "invalid lookback distance"
        case -4: return "invalid wrapper/header"
        case -5: return "unsupported header method"
        case -6: return "CRC/length mismatch in gzip trailer"
        case -7: return "dictionary needed"
        default: return "isal_inflate error \(rc)"
        }
    }
}

/// zstd via `ZSTD_decompressStream` (handles concatenated frames).
final class ZstdDecoder: StreamDecoder {
    private let input: InputReader
    private let context: OpaquePointer
    private let inBuffer: UnsafeMutableRawPointer
    private var inBuf = ZSTD_inBuffer(src: nil, size: 0, pos: 0)
    private var bufferStart: Int64 = 0
    private var inputEOF = false
    private var frameComplete = false
    private var sawInput = false

    init(_ input: InputReader) {
        self.input = input
        context = ZSTD_createDCtx()!
        inBuffer = .allocate(byteCount: compressedReadSize, alignment: 16)
    }

    deinit {
        ZSTD_freeDCtx(context)
        inBuffer.deallocate()
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var outBuf = ZSTD_outBuffer(dst: buffer.baseAddress, size: buffer.count, pos: 0)
        while outBuf.pos < outBuf.size {
            if inBuf.pos == inBuf.size && !inputEOF {
                bufferStart += Int64(inBuf.size)
                let n = try input.read(into: inBuffer, capacity: compressedReadSize)
                inBuf = ZSTD_inBuffer(src: inBuffer, size: n, pos: 0)
                if n == 0 { inputEOF = true } else { sawInput = true }
            }
            let inputExhausted = inBuf.pos == inBuf.size && inputEOF
            if inputExhausted && frameComplete { break }
            let before = (inBuf.pos, outBuf.pos)
            let rc = ZSTD_decompressStream(context, &outBuf, &inBuf)
            if ZSTD_isError(rc) != 0 {
                throw ArchiveError(.corruptCompressedData(
                    format: "zstd", offset: bufferStart + Int64(inBuf.pos), detail: String(cString: ZSTD_getErrorName(rc))))
            }
            frameComplete = rc == 0
            if inputExhausted && !frameComplete && before == (inBuf.pos, outBuf.pos) {
                throw ArchiveError(.truncated(detail: sawInput ? "zstd stream ends in the middle of a frame" : "empty zstd stream"))
            }
        }
        return outBuf.pos
    }
}
