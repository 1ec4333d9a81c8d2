import CDeflate

/// One libdeflate compressor producing zlib streams (RFC 1950), which is what squashfs calls "gzip": the kernel
/// inflates blocks with `zlib_inflateInit`. Not thread-safe: one per thread.
final class ZlibBlockCompressor: @unchecked Sendable {
    private let handle: OpaquePointer

    init(level: Int) throws(SquashfsError) {
        guard let handle = libdeflate_alloc_compressor(Int32(level)) else {
            throw .invalidOptions("libdeflate cannot make a compressor at level \(level) (levels 1-12)")
        }
        self.handle = handle
    }

    deinit { libdeflate_free_compressor(handle) }

    /// The compressed bytes, or nil when compression would not make the block smaller (squashfs stores it raw).
    func compress(_ input: UnsafeRawBufferPointer) -> [UInt8]? {
        guard input.count > 1 else { return nil }
        let limit = input.count - 1
        let output = [UInt8](unsafeUninitializedCapacity: limit) { buffer, count in
            count = libdeflate_zlib_compress(handle, input.baseAddress, input.count, buffer.baseAddress, limit)
        }
        return output.isEmpty ? nil : output
    }

    static var libraryVersion: String { LIBDEFLATE_VERSION_STRING }
}
