import CISAL
import CZstd

/// Produces decompressed bytes from an `InputReader`.
protocol StreamDecoder: AnyObject {
    /// Fills `buffer` as far as possible; returns fewer bytes only at the end of the stream (0 = done).
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// The decoder for a layer, bounded by `limit`; `layer` names it in errors.
func makeDecoder(_ compression: LayerCompression, input: InputReader, limit: DecompressionLimit, layer: String) -> StreamDecoder {
    let decoder: StreamDecoder
    switch compression {
    case .none: decoder = PassthroughDecoder(input)
    case .gzip: decoder = GzipDecoder(input)
    case .zstd: decoder = ZstdDecoder(input)
    }
    return SizeLimitedDecoder(decoder, input: input, limit: limit, layer: layer)
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
///
/// Member headers are parsed here, not by ISA-L: ISA-L 2.30 (Debian 12) leaves a flags field uninitialised when
/// a header (with a file name) is split across two input buffers and then rejects a valid stream. ISA-L inflates
/// each member as raw deflate and verifies its CRC32 and length trailer (`ISAL_GZIP_NO_HDR_VER`).
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
    /// Between members (and at the start): the next bytes are a gzip header, collected here until complete.
    private var needHeader = true
    private var header: [UInt8] = []
    private static let maxHeader = 64 << 10

    init(_ input: InputReader) {
        self.input = input
        state = .allocate(capacity: 1)
        inBuffer = .allocate(capacity: compressedReadSize)
        isal_inflate_init(state)
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
            if !needHeader && (trailingZeros || state.pointee.block_state == ISAL_BLOCK_FINISH) {
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
                needHeader = true
            }
            if needHeader {
                if state.pointee.avail_in == 0 {
                    guard inputEOF else { continue }
                    throw ArchiveError(.truncated(detail: sawInput
                        ? "gzip stream ends inside a member header at compressed offset \(compressedOffset)"
                        : "empty gzip stream"))
                }
                guard try consumeHeader() else { continue }
                needHeader = false
                let next = state.pointee.next_in, avail = state.pointee.avail_in
                isal_inflate_reset(state)
                state.pointee.crc_flag = UInt32(ISAL_GZIP_NO_HDR_VER)
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
                throw ArchiveError(.truncated(detail:
                    "gzip stream ends in the middle of a member at compressed offset \(compressedOffset) (truncated or corrupt)"))
            }
        }
        return produced
    }

    /// Moves header bytes from the input into `header`; true once the whole header is consumed (bytes taken past
    /// its end are given back to the input).
    private func consumeHeader() throws -> Bool {
        let next = state.pointee.next_in!
        let take = min(Int(state.pointee.avail_in), GzipDecoder.maxHeader - header.count)
        header.append(contentsOf: UnsafeBufferPointer(start: next, count: take))
        state.pointee.next_in = next + take
        state.pointee.avail_in -= UInt32(take)
        let parsed: Int?
        do {
            parsed = try GzipDecoder.headerLength(header)
        } catch let problem as GzipHeaderProblem {
            throw corrupt(problem.detail)
        }
        guard let length = parsed else {
            if header.count >= GzipDecoder.maxHeader { throw corrupt("gzip member header longer than 64 KiB") }
            return false
        }
        // Earlier rounds ended with an incomplete header, so the excess lies within this round's bytes.
        let excess = header.count - length
        state.pointee.next_in = state.pointee.next_in - excess
        state.pointee.avail_in += UInt32(excess)
        header.removeAll(keepingCapacity: true)
        return true
    }

    /// The length of the gzip member header at the start of `bytes` (RFC 1952 §2.3), nil while incomplete.
    static func headerLength(_ bytes: [UInt8]) throws -> Int? {
        func invalid(_ detail: String) -> GzipHeaderProblem { GzipHeaderProblem(detail: detail) }
        if bytes.count >= 1, bytes[0] != 0x1f { throw invalid("garbage where a gzip member should start (no gzip magic)") }
        if bytes.count >= 2, bytes[1] != 0x8b { throw invalid("garbage where a gzip member should start (no gzip magic)") }
        guard bytes.count >= 10 else { return nil }
        guard bytes[2] == 8 else { throw invalid("unsupported gzip compression method \(bytes[2])") }
        let flags = bytes[3]
        guard flags & 0xE0 == 0 else { throw invalid("reserved gzip header flags set") }
        var end = 10
        if flags & 0x04 != 0 {  // FEXTRA
            guard bytes.count >= end + 2 else { return nil }
            end += 2 + (Int(bytes[end]) | Int(bytes[end + 1]) << 8)
            guard bytes.count >= end else { return nil }
        }
        for flag: UInt8 in [0x08, 0x10] where flags & flag != 0 {  // FNAME, FCOMMENT: zero-terminated
            guard let zero = bytes[end...].firstIndex(of: 0) else { return nil }
            end = zero + 1
        }
        if flags & 0x02 != 0 {  // FHCRC
            end += 2
            guard bytes.count >= end else { return nil }
        }
        return end
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

struct GzipHeaderProblem: Error {
    var detail: String
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
