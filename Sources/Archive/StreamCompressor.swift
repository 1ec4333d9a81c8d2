/// A streaming compressor: feed input in pieces, get output in pieces, then finish.
public protocol StreamCompressor: AnyObject {
    func compress(_ input: UnsafeRawBufferPointer, output: ([UInt8]) throws -> Void) throws
    func finish(output: ([UInt8]) throws -> Void) throws
}

extension StreamCompressor {
    /// Compresses all of `data` in one call.
    public func compressAll(_ data: [UInt8]) throws -> [UInt8] {
        var out: [UInt8] = []
        try data.withUnsafeBytes { try compress($0) { out += $0 } }
        try finish { out += $0 }
        return out
    }
}

/// A compressor for a layer compression, or nil for uncompressed layers.
public func makeCompressor(for compression: LayerCompression) -> (any StreamCompressor)? {
    switch compression {
    case .gzip: return GzipCompressor(level: 1)
    case .zstd: return ZstdCompressor(level: 3)
    case .none: return nil
    }
}
