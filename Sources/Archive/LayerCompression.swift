/// Compression of an OCI layer blob.
public enum LayerCompression: String, Sendable, CaseIterable {
    case none, gzip, zstd

    /// Sniffs the compression from the first bytes of a blob:
    /// `1f 8b` is gzip, `28 b5 2f fd` is zstd, anything else is treated as an uncompressed tar.
    public static func detect(_ prefix: [UInt8]) -> LayerCompression {
        if prefix.count >= 2, prefix[0] == 0x1f, prefix[1] == 0x8b { return .gzip }
        if prefix.count >= 4, prefix[0] == 0x28, prefix[1] == 0xb5, prefix[2] == 0x2f, prefix[3] == 0xfd {
            return .zstd
        }
        return .none
    }
}
