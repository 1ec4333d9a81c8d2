import Foundation

/// An image manifest (OCI `application/vnd.oci.image.manifest.v1+json` or Docker schema 2).
public struct Manifest: Codable, Sendable, Hashable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var artifactType: String?
    public var config: Descriptor
    public var layers: [Descriptor]
    public var subject: Descriptor?
    public var annotations: [String: String]?

    public init(
        mediaType: String? = MediaType.ociManifest, config: Descriptor, layers: [Descriptor],
        annotations: [String: String]? = nil
    ) {
        self.schemaVersion = 2
        self.mediaType = mediaType
        self.config = config
        self.layers = layers
        self.annotations = annotations
    }
}

/// An image index (OCI) or manifest list (Docker).
public struct Index: Codable, Sendable, Hashable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var manifests: [Descriptor]
    public var annotations: [String: String]?

    public init(mediaType: String? = MediaType.ociIndex, manifests: [Descriptor], annotations: [String: String]? = nil) {
        self.schemaVersion = 2
        self.mediaType = mediaType
        self.manifests = manifests
        self.annotations = annotations
    }
}

/// A manifest-or-index document as fetched, decoded by its media type.
public enum ManifestDocument: Sendable {
    case manifest(Manifest)
    case index(Index)

    /// Decodes `bytes` served with `contentType`. The document's own `mediaType` field wins over a generic
    /// Content-Type (some registries answer `application/json`).
    public static func decode(_ bytes: [UInt8], contentType: String?) throws -> ManifestDocument {
        let data = Data(bytes)
        let probe: MediaTypeProbe
        do {
            probe = try JSONDecoder().decode(MediaTypeProbe.self, from: data)
        } catch {
            throw OCIError.malformedDocument(mediaType: contentType ?? "manifest", reason: "not a JSON object (\(error))")
        }
        let declared = probe.mediaType ?? contentType.map(Self.stripParameters)
        let type: String
        if let declared, MediaType.isIndex(declared) || MediaType.isManifest(declared) {
            type = declared
        } else if declared == nil || declared == "application/json" {
            // No usable type: infer from shape as containerd does.
            type = probe.manifests != nil ? MediaType.ociIndex : MediaType.ociManifest
        } else {
            throw OCIError.unsupportedMediaType(declared!)
        }
        guard probe.schemaVersion == 2 else {
            throw OCIError.malformedDocument(mediaType: type, reason: "schemaVersion \(probe.schemaVersion.map(String.init) ?? "missing"), expected 2")
        }
        do {
            if MediaType.isIndex(type) {
                return .index(try JSONDecoder().decode(Index.self, from: data))
            }
            return .manifest(try JSONDecoder().decode(Manifest.self, from: data))
        } catch let error as DecodingError {
            throw OCIError.malformedDocument(mediaType: type, reason: describe(error))
        }
    }

    /// The document's media type, with the OCI default when the document does not declare one.
    public var mediaType: String {
        switch self {
        case .manifest(let manifest): return manifest.mediaType ?? MediaType.ociManifest
        case .index(let index): return index.mediaType ?? MediaType.ociIndex
        }
    }

    public static func stripParameters(_ contentType: String) -> String {
        String(contentType.split(separator: ";").first ?? "").trimmingCharacters(in: .whitespaces)
    }

    private struct MediaTypeProbe: Decodable {
        var schemaVersion: Int?
        var mediaType: String?
        var manifests: [AnyDecodable]?
    }
    private struct AnyDecodable: Decodable { init(from decoder: any Decoder) throws {} }
}

func describe(_ error: DecodingError) -> String {
    switch error {
    case .keyNotFound(let key, let context):
        return "missing field '\((context.codingPath + [key]).map(\.stringValue).joined(separator: "."))'"
    case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
        let path = context.codingPath.map(\.stringValue).joined(separator: ".")
        return "\(path.isEmpty ? "document" : "field '\(path)'"): \(context.debugDescription)"
    @unknown default:
        return "\(error)"
    }
}

extension JSONEncoder {
    /// Encoder for documents we write: stable key order, so re-encoding the same value gives the same digest.
    public static var canonical: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}
