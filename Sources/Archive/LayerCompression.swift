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

    /// Maps an OCI media type (e.g. `application/vnd.oci.image.layer.v1.tar+gzip`) to a compression.
    /// Returns nil for media types that are not recognisable layer tars.
    public init?(mediaType: String) {
        if mediaType.hasSuffix("+gzip") || mediaType.hasSuffix(".tar.gzip")
            || mediaType == "application/vnd.docker.image.rootfs.diff.tar.gzip"
        {
            self = .gzip
        } else if mediaType.hasSuffix("+zstd") {
            self = .zstd
        } else if mediaType.hasSuffix(".tar") || mediaType.hasSuffix("layer.v1.tar") {
            self = .none
        } else {
            return nil
        }
    }
}
