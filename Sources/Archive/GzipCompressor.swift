import CISAL

/// Streaming gzip compressor on ISA-L `isal_deflate` (levels 0...3; 1 is the fast default).
/// Used by tests and the image generator to produce gzip layers.
public final class GzipCompressor: StreamCompressor {
    private let stream: UnsafeMutablePointer<isal_zstream>
    private let levelBuffer: UnsafeMutableRawPointer?
    private let outBuffer: UnsafeMutablePointer<UInt8>
    private let outCapacity = 1 << 18
    private var finished = false

    /// - Parameter level: ISA-L compression level 0...3.
    public init(level: Int = 1) {
        precondition((0...3).contains(level), "ISA-L supports levels 0...3")
        stream = .allocate(capacity: 1)
        isal_deflate_init(stream)
        stream.pointee.gzip_flag = UInt16(IGZIP_GZIP)
        stream.pointee.level = UInt32(level)
        if level > 0 {
            // Larger than every ISAL_DEF_LVLn_LARGE; the library accepts any size >= the minimum.
            let size = 1 << 21
            levelBuffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
            stream.pointee.level_buf = levelBuffer!.assumingMemoryBound(to: UInt8.self)
            stream.pointee.level_buf_size = UInt32(size)
        } else {
            levelBuffer = nil
        }
        outBuffer = .allocate(capacity: outCapacity)
    }

    deinit {
        stream.deallocate()
        levelBuffer?.deallocate()
        outBuffer.deallocate()
    }

    /// Compresses `input`, passing produced output to `output`. Call `finish` at the end.
    public func compress(_ input: UnsafeRawBufferPointer, output: ([UInt8]) throws -> Void) throws {
        try run(input, end: false, output: output)
    }

    public func finish(output: ([UInt8]) throws -> Void) throws {
        try run(UnsafeRawBufferPointer(start: nil, count: 0), end: true, output: output)
        finished = true
    }

    private func run(_ input: UnsafeRawBufferPointer, end: Bool, output: ([UInt8]) throws -> Void) throws {
        precondition(!finished)
        var remaining = input
        repeat {
            let chunk = min(remaining.count, Int(UInt32.max / 2))
            stream.pointee.next_in = UnsafeMutablePointer(mutating: remaining.baseAddress?.assumingMemoryBound(to: UInt8.self))
            stream.pointee.avail_in = UInt32(chunk)
            let last = end || false
            stream.pointee.end_of_stream = last && chunk == remaining.count ? 1 : 0
            stream.pointee.flush = UInt16(NO_FLUSH)
            repeat {
                stream.pointee.next_out = outBuffer
                stream.pointee.avail_out = UInt32(outCapacity)
                let rc = isal_deflate(stream)
                if rc != COMP_OK {
                    throw ArchiveError(.corruptCompressedData(format: "gzip", offset: 0, detail: "isal_deflate failed (\(rc))"))
                }
                let produced = outCapacity - Int(stream.pointee.avail_out)
                if produced > 0 { try output(Array(UnsafeBufferPointer(start: outBuffer, count: produced))) }
            } while stream.pointee.avail_in > 0
                || (stream.pointee.end_of_stream != 0 && stream.pointee.internal_state.state != ZSTATE_END)
            remaining = UnsafeRawBufferPointer(rebasing: remaining[chunk...])
        } while remaining.count > 0
    }
}

/// One-shot gzip (ISA-L, level 1).
public func gzip(data: [UInt8], level: Int = 1) throws -> [UInt8] {
    try GzipCompressor(level: level).compressAll(data)
}
