/// Media types of OCI and Docker image documents and layers.
public enum MediaType {
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let ociLayer = "application/vnd.oci.image.layer.v1.tar"
    public static let ociLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    public static let ociLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
    public static let ociLayerNondistributableGzip = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    public static let dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    public static let dockerForeignLayerGzip = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

    /// What a client sends in `Accept` for manifests: all four, since distribution answers 404 for a stored type
    /// it was not told the client accepts.
    public static let manifestAccept = [ociIndex, ociManifest, dockerManifestList, dockerManifest]

    public static func isIndex(_ type: String) -> Bool { type == ociIndex || type == dockerManifestList }
    public static func isManifest(_ type: String) -> Bool { type == ociManifest || type == dockerManifest }

    /// The compression a layer media type implies, or nil for types that are not layers.
    public static func layerCompression(_ type: String) -> LayerCompressionKind? {
        switch type {
        case ociLayer, "application/vnd.oci.image.layer.nondistributable.v1.tar", "application/vnd.docker.image.rootfs.diff.tar":
            return .uncompressed
        case ociLayerGzip, ociLayerNondistributableGzip, dockerLayerGzip, dockerForeignLayerGzip: return .gzip
        case ociLayerZstd, "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": return .zstd
        default: return nil
        }
    }
}

/// A layer's compression as its media type declares it (`uncompressed`, not `none`, so it never reads as
/// `Optional.none`).
public enum LayerCompressionKind: String, Sendable { case uncompressed, gzip, zstd }
