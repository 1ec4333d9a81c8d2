/// A reference to content by digest, media type and size (OCI image-spec `descriptor.go`).
public struct Descriptor: Codable, Sendable, Hashable {
    public var mediaType: String
    public var digest: Digest
    public var size: Int64
    public var urls: [String]?
    public var annotations: [String: String]?
    public var platform: Platform?
    public var artifactType: String?

    public init(
        mediaType: String, digest: Digest, size: Int64, urls: [String]? = nil, annotations: [String: String]? = nil,
        platform: Platform? = nil, artifactType: String? = nil
    ) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.urls = urls
        self.annotations = annotations
        self.platform = platform
        self.artifactType = artifactType
    }

    private enum CodingKeys: String, CodingKey {
        case mediaType, digest, size, urls, annotations, platform, artifactType
    }

    /// Decodes a descriptor as a registry or layout serves it. A negative size is rejected here, where every
    /// manifest, index and layout passes: code downstream builds byte ranges and buffers from it.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        mediaType = try container.decode(String.self, forKey: .mediaType)
        digest = try container.decode(Digest.self, forKey: .digest)
        size = try container.decode(Int64.self, forKey: .size)
        guard size >= 0 else {
            throw DecodingError.dataCorruptedError(forKey: .size, in: container, debugDescription: "size \(size) is negative")
        }
        urls = try container.decodeIfPresent([String].self, forKey: .urls)
        annotations = try container.decodeIfPresent([String: String].self, forKey: .annotations)
        platform = try container.decodeIfPresent(Platform.self, forKey: .platform)
        artifactType = try container.decodeIfPresent(String.self, forKey: .artifactType)
    }
}

public enum Annotation {
    public static let refName = "org.opencontainers.image.ref.name"
}

/// Layer annotation carrying the digest of an eStargz layer's uncompressed TOC JSON, which names every file's
/// metadata and chunk digests: the TOC with this digest determines the layer's whole tree.
public let tocDigestAnnotation = "containerd.io/snapshot/stargz/toc.digest"
