import OCI
import Foundation

/// Failures talking to a registry. Each carries enough context (URL, status, the registry's own error codes)
/// for the user to act on it.
public enum RegistryError: Error, Sendable, CustomStringConvertible {
    case notFound(what: String, url: String, detail: String)
    case unauthorized(url: String, detail: String)
    case denied(url: String, detail: String)
    case unexpectedStatus(Int, method: String, url: String, detail: String)
    case digestMismatch(expected: Digest, actual: Digest, url: String)
    case sizeMismatch(expected: Int64, actual: Int64, url: String)
    case tooLarge(limit: Int64, url: String)
    case transport(url: String, underlying: String)
    case tls(url: String, underlying: String)
    case retriesExhausted(attempts: Int, last: String)
    case invalidResponse(url: String, reason: String)
    case credentialHelper(helper: String, reason: String)
    case invalidMirror(String)

    public var description: String {
        switch self {
        case .notFound(let what, let url, let detail): return "\(what) not found: \(url)\(suffix(detail))"
        case .unauthorized(let url, let detail):
            return "authentication required for \(url)\(suffix(detail)) (no accepted credentials: check ~/.docker/config.json or --creds)"
        case .denied(let url, let detail): return "access denied to \(url)\(suffix(detail))"
        case .unexpectedStatus(let status, let method, let url, let detail): return "\(method) \(url): HTTP \(status)\(suffix(detail))"
        case .digestMismatch(let expected, let actual, let url):
            return "digest mismatch for \(url): expected \(expected), got \(actual); the bytes were discarded"
        case .sizeMismatch(let expected, let actual, let url):
            return "size mismatch for \(url): expected \(expected) bytes, got \(actual); the bytes were discarded"
        case .tooLarge(let limit, let url): return "\(url) is larger than the \(limit)-byte limit for this kind of document"
        case .transport(let url, let underlying): return "network error for \(url): \(underlying)"
        case .tls(let url, let underlying):
            let hint = underlying.contains("CERTIFICATE_VERIFY_FAILED")
                ? "the registry's certificate is not trusted: pass --ca-cert FILE with its CA (or --tls-verify=false, for tests only)"
                : "TLS handshake failed"
            return "\(hint); \(url): \(underlying)"
        case .retriesExhausted(let attempts, let last): return "gave up after \(attempts) attempts: \(last)"
        case .invalidResponse(let url, let reason): return "invalid response from \(url): \(reason)"
        case .credentialHelper(let helper, let reason): return "credential helper docker-credential-\(helper) failed: \(reason)"
        case .invalidMirror(let reason): return "registry mirror \(reason)"
        }
    }

    private func suffix(_ detail: String) -> String { detail.isEmpty ? "" : " (\(detail))" }

    /// Whether trying again may help.
    var isTransient: Bool {
        switch self {
        case .transport, .digestMismatch, .sizeMismatch: return true
        case .unexpectedStatus(let status, _, _, _): return status == 429 || status == 408 || status >= 500
        default: return false
        }
    }
}

/// The distribution spec's error body: `{"errors":[{"code":…,"message":…}]}`.
struct ErrorBody: Decodable {
    struct Entry: Decodable {
        var code: String?
        var message: String?
    }
    var errors: [Entry]?

    static func summary(of bytes: [UInt8]) -> String {
        guard let body = try? JSONDecoder().decode(ErrorBody.self, from: Data(bytes)), let errors = body.errors, !errors.isEmpty else {
            let text = String(decoding: bytes.prefix(200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            return text
        }
        return errors.map { [$0.code, $0.message].compactMap { $0 }.joined(separator: ": ") }.joined(separator: "; ")
    }
}
