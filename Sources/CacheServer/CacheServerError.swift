import Foundation

/// Failures of the cache server itself (configuration, startup); request failures become distribution-spec error
/// answers instead.
public enum CacheServerError: Error, Sendable, CustomStringConvertible {
    case configuration(String)

    public var description: String {
        switch self {
        case .configuration(let message): return message
        }
    }
}

/// An answer in the distribution spec's error format: `{"errors":[{"code":…,"message":…}]}`.
struct RegistryErrorAnswer: Error, Sendable {
    var status: Int
    var code: String
    var message: String
    var headers: [(String, String)] = []

    var body: [UInt8] {
        struct Body: Encodable {
            struct Entry: Encodable {
                var code: String
                var message: String
            }
            var errors: [Entry]
        }
        return Array((try? JSONEncoder().encode(Body(errors: [.init(code: code, message: message)]))) ?? Data())
    }

    static func blobUnknown(_ digest: String) -> Self { Self(status: 404, code: "BLOB_UNKNOWN", message: "blob unknown to registry: \(digest)") }
    static func manifestUnknown(_ reference: String) -> Self {
        Self(status: 404, code: "MANIFEST_UNKNOWN", message: "manifest unknown: \(reference)")
    }
    static func unavailable(_ detail: String) -> Self { Self(status: 503, code: "UNAVAILABLE", message: detail, headers: [("Retry-After", "5")]) }
    static func badGateway(_ detail: String) -> Self { Self(status: 502, code: "UPSTREAM_ERROR", message: detail) }
}

