import CZstd

/// Streaming zstd compressor (`ZSTD_compressStream2`).
public final class ZstdCompressor: StreamCompressor {
    private let context: OpaquePointer
    private let outBuffer: UnsafeMutableRawPointer
    private let outCapacity: Int

    public init(level: Int32 = 3) {
        context = ZSTD_createCCtx()!
        ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level)
        outCapacity = ZSTD_CStreamOutSize()
        outBuffer = .allocate(byteCount: outCapacity, alignment: 16)
    }

    deinit {
        ZSTD_freeCCtx(context)
        outBuffer.deallocate()
    }

    public func compress(_ input: UnsafeRawBufferPointer, output: ([UInt8]) throws -> Void) throws {
        try run(input, directive: ZSTD_e_continue, output: output)
    }

    /// Ends the current frame. Calling `compress` afterwards starts a new frame.
    public func finish(output: ([UInt8]) throws -> Void) throws {
        try run(UnsafeRawBufferPointer(start: nil, count: 0), directive: ZSTD_e_end, output: output)
    }

    private func run(_ input: UnsafeRawBufferPointer, directive: ZSTD_EndDirective, output: ([UInt8]) throws -> Void) throws {
        var inBuf = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        while true {
            var outBuf = ZSTD_outBuffer(dst: outBuffer, size: outCapacity, pos: 0)
            let rc = ZSTD_compressStream2(context, &outBuf, &inBuf, directive)
            if ZSTD_isError(rc) != 0 {
                throw ArchiveError(.corruptCompressedData(format: "zstd", offset: 0, detail: String(cString: ZSTD_getErrorName(rc))))
            }
            if outBuf.pos > 0 {
                try output(Array(UnsafeRawBufferPointer(start: outBuffer, count: outBuf.pos)))
            }
            let done = directive == ZSTD_e_end ? rc == 0 : inBuf.pos == inBuf.size
            if done { return }
        }
    }
}

/// One-shot zstd compression.
public func zstd(data: [UInt8], level: Int32 = 3) throws -> [UInt8] {
    try ZstdCompressor(level: level).compressAll(data)
}
