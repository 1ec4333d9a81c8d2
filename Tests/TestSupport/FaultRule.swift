import Foundation

/// A fault the ``FaultProxy`` injects into one matching request.
public enum Fault: Sendable, CustomStringConvertible {
    /// Answer with this status, headers and body without contacting upstream.
    case status(Int, headers: [(String, String)] = [], body: String = "")
    /// Forward status and headers, then abort the TCP connection (RST via
    /// SO_LINGER 0) after `bytes` body bytes.
    case resetAfter(bytes: Int)
    /// Forward status and headers (with the full Content-Length), then only
    /// `bytes` body bytes, then close the connection normally (FIN).
    case truncateBody(bytes: Int)
    /// Forward the full response but XOR the body byte at offset `at` with 0xFF.
    case flipByte(at: Int)
    /// Wait this long before doing anything with the request (before
    /// contacting upstream, so before any response header is sent).
    case stall(seconds: Double)
    /// Remove `Range` (and `If-Range`) from the request so upstream answers
    /// 200 with the full body.
    case ignoreRange
    /// Forward the response body at about this many bytes per second, so a test can act mid-transfer.
    case throttle(bytesPerSecond: Int)
    /// Forward the request, then reset the connection instead of sending upstream's answer: the request took
    /// effect, but the client never learns it.
    case dropResponse

    /// 503 Service Unavailable.
    public static var serviceUnavailable: Fault { .status(503, body: "injected 503") }
    /// 500 Internal Server Error.
    public static var internalServerError: Fault { .status(500, body: "injected 500") }
    /// 429 Too Many Requests with `Retry-After: seconds`.
    public static func tooManyRequests(retryAfter seconds: Int = 1) -> Fault {
        .status(429, headers: [("Retry-After", String(seconds))], body: "injected 429")
    }

    public var description: String {
        switch self {
        case .status(let code, _, _): return "status(\(code))"
        case .resetAfter(let n): return "resetAfter(\(n))"
        case .truncateBody(let n): return "truncateBody(\(n))"
        case .flipByte(let n): return "flipByte(\(n))"
        case .stall(let s): return "stall(\(s))"
        case .ignoreRange: return "ignoreRange"
        case .throttle(let rate): return "throttle(\(rate) B/s)"
        case .dropResponse: return "dropResponse"
        }
    }
}

/// Which requests a ``FaultRule`` applies to.
public enum RequestMatch: Sendable, CustomStringConvertible {
    /// Every request.
    case any
    /// Path (without query) contains this substring.
    case pathContains(String)
    /// Path (without query) matches this regular expression (anywhere; anchor
    /// with ^ and $ yourself).
    case pathRegex(String)

    func matches(path: String) -> Bool {
        switch self {
        case .any:
            return true
        case .pathContains(let fragment):
            return path.contains(fragment)
        case .pathRegex(let pattern):
            guard let regex = try? NSRegularExpression(pattern: pattern) else { return false }
            let range = NSRange(path.startIndex..<path.endIndex, in: path)
            return regex.firstMatch(in: path, range: range) != nil
        }
    }

    public var description: String {
        switch self {
        case .any: return "any"
        case .pathContains(let s): return "contains(\(s))"
        case .pathRegex(let s): return "regex(\(s))"
        }
    }
}

/// "For the next `times` requests with this method whose path matches,
/// inject `fault`." Rules are tried in the order they were added; the first
/// one with remaining firings wins and is decremented.
public struct FaultRule: Sendable, CustomStringConvertible {
    /// HTTP method to match (case-insensitive), nil for any.
    public var method: String?
    public var match: RequestMatch
    public var fault: Fault
    /// Remaining firings. `Int.max` means "always".
    public var times: Int

    public init(method: String? = nil, match: RequestMatch, fault: Fault, times: Int = 1) {
        self.method = method
        self.match = match
        self.fault = fault
        self.times = times
    }

    /// Convenience: path-substring match.
    public init(method: String? = nil, path: String, fault: Fault, times: Int = 1) {
        self.init(method: method, match: .pathContains(path), fault: fault, times: times)
    }

    func matches(method: String, path: String) -> Bool {
        if let m = self.method, m.uppercased() != method.uppercased() { return false }
        return match.matches(path: path)
    }

    public var description: String {
        "FaultRule(\(method ?? "*") \(match) -> \(fault) x\(times == Int.max ? "∞" : String(times)))"
    }
}

/// One request seen by a ``FaultProxy``.
public struct LoggedRequest: Sendable, CustomStringConvertible {
    /// Sequence number (0-based) within this proxy.
    public var id: Int
    public var date: Date
    public var method: String
    /// Full request target, e.g. "/v2/x/blobs/uploads/?digest=…".
    public var uri: String
    /// Path without query.
    public var path: String
    /// Query string without "?", if any.
    public var query: String?
    /// Value of the `Range` header as sent by the client.
    public var range: String?
    /// Scheme of the client's `Authorization` header ("Basic", "Bearer"), nil when absent.
    public var authorizationScheme: String?
    /// Status sent to the client; nil when no response head was sent.
    public var status: Int?
    /// What the proxy did besides plain forwarding: an injected fault's
    /// description, "token-challenge", "token-endpoint", "redirect".
    public var action: String?
    /// Body bytes received from the client.
    public var requestBodyBytes: Int
    /// Body bytes sent to the client.
    public var responseBodyBytes: Int

    /// Whether the client sent an `Authorization` header.
    public var hasAuthorization: Bool { authorizationScheme != nil }

    public var description: String {
        var s = "#\(id) \(method) \(uri) -> \(status.map(String.init) ?? "-")"
        if let range { s += " range=\(range)" }
        if let authorizationScheme { s += " auth=\(authorizationScheme)" }
        if let action { s += " [\(action)]" }
        return s
    }
}
