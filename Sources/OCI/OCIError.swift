/// Errors in parsing OCI values. Each names the offending input so the message is actionable.
public enum OCIError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidDigest(String)
    case invalidReference(String, reason: String)
    case invalidPlatform(String)
    case malformedDocument(mediaType: String, reason: String)
    case unsupportedMediaType(String)
    case noMatchingPlatform(wanted: String, available: [String])

    public var description: String {
        switch self {
        case .invalidDigest(let value): return "invalid digest '\(value)' (expected sha256:<64 hex> or sha512:<128 hex>)"
        case .invalidReference(let value, let reason): return "invalid image reference '\(value)': \(reason)"
        case .invalidPlatform(let value): return "invalid platform '\(value)' (expected os/arch[/variant], e.g. linux/amd64)"
        case .malformedDocument(let mediaType, let reason): return "malformed \(mediaType): \(reason)"
        case .unsupportedMediaType(let type): return "unsupported media type '\(type)'"
        case .noMatchingPlatform(let wanted, let available):
            return "no image for platform \(wanted) in the index (available: \(available.joined(separator: ", ")))"
        }
    }
}
