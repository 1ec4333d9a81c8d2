import EStargz
import Foundation
import OCI

/// The OCI artifact that carries an image's gzip indexes: a manifest of `artifactType` `GzipIndex.artifactType`
/// whose `subject` is the image's manifest, with OCI's empty config and, as its layers, one index blob per indexed
/// layer (annotated with that layer's digest) and optionally the files to prefetch first.
public enum GzipIndexArtifact {
    /// OCI's empty descriptor (`{}`), the config of an artifact that has none.
    public static let emptyConfig = Descriptor(
        mediaType: "application/vnd.oci.empty.v1+json", digest: Digest.sha256(of: Array("{}".utf8)), size: 2)
    public static let emptyConfigBytes = Array("{}".utf8)
    public static let prioritizedFilesMediaType = "application/vnd.slipway.prioritized-files.v1+json"

    /// Whether a layer is one an index serves: gzip by media type and not eStargz (those have their TOC).
    public static func isIndexable(_ layer: Descriptor) -> Bool {
        let type = layer.mediaType
        return (type.hasSuffix("+gzip") || type.hasSuffix(".tar.gzip")) && layer.annotations?[tocDigestAnnotation] == nil
    }

    /// The descriptor of a layer's index blob in the artifact.
    public static func indexBlob(_ blob: Descriptor, of layer: Digest) -> Descriptor {
        var described = blob
        described.mediaType = GzipIndex.layerMediaType
        described.annotations = [GzipIndex.layerAnnotation: layer.description]
        return described
    }

    /// The artifact manifest for `blobs` (index blobs, then the prioritized files), as descriptor and bytes. The
    /// same inputs give the same bytes, so a cache that composes the artifact again gets the same digest.
    public static func manifest(subject: Descriptor, blobs: [Descriptor]) throws -> (Descriptor, [UInt8]) {
        var manifest = Manifest(config: emptyConfig, layers: blobs)
        manifest.mediaType = MediaType.ociManifest
        manifest.artifactType = GzipIndex.artifactType
        manifest.subject = Descriptor(mediaType: subject.mediaType, digest: subject.digest, size: subject.size)
        let bytes = Array(try JSONEncoder.canonical.encode(manifest))
        let descriptor = Descriptor(
            mediaType: MediaType.ociManifest, digest: Digest.sha256(of: bytes), size: Int64(bytes.count), artifactType: GzipIndex.artifactType)
        return (descriptor, bytes)
    }
}
