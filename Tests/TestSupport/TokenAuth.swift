import Foundation

/// Settings for the Docker/OCI token-auth emulation of ``FaultProxy``.
public struct TokenAuthConfiguration: Sendable {
    /// Credentials the token endpoint accepts via Basic auth. nil: anyone,
    /// anonymous included, gets every requested action.
    public var credentials: BasicCredentials?
    /// With `credentials` set, whether a request without Basic credentials
    /// gets a token (limited to `pull`).
    public var allowAnonymousPull: Bool
    /// How long an issued token is accepted.
    public var tokenLifetime: TimeInterval
    /// `expires_in` reported in the token response; nil: `tokenLifetime`
    /// rounded up to whole seconds (minimum 1).
    public var advertisedExpiresIn: Int?
    /// The `service` in the challenge.
    public var service: String

    public init(
        credentials: BasicCredentials? = nil,
        allowAnonymousPull: Bool = false,
        tokenLifetime: TimeInterval = 300,
        advertisedExpiresIn: Int? = nil,
        service: String = "test-registry"
    ) {
        self.credentials = credentials
        self.allowAnonymousPull = allowAnonymousPull
        self.tokenLifetime = tokenLifetime
        self.advertisedExpiresIn = advertisedExpiresIn
        self.service = service
    }
}

/// One call of the proxy's `/token` endpoint.
public struct TokenRequestRecord: Sendable, CustomStringConvertible {
    public var date: Date
    /// `scope` query parameters as requested (one entry per scope).
    public var scopes: [String]
    public var service: String?
    /// Basic-auth user name, nil for anonymous.
    public var username: String?
    /// 200 when a token was issued, 401 for bad credentials.
    public var status: Int
    /// The issued token (nil when refused).
    public var token: String?

    public var description: String {
        "token(\(username ?? "anonymous") \(scopes.joined(separator: " ")) -> \(status))"
    }
}

/// A token remembered by the proxy.
struct IssuedToken: Sendable {
    /// Repository name -> granted actions.
    var access: [String: Set<String>]
    /// Non-repository scopes granted verbatim (e.g. "registry:catalog:*").
    var otherScopes: Set<String>
    var expires: Date
}

/// The scope a request needs, derived from its path and method.
struct RequiredScope: Sendable, Equatable {
    /// nil for the base endpoint `/v2/`.
    var repository: String?
    var actions: [String]
    /// For non-repository scopes like the catalog.
    var rawScope: String?

    var challengeScope: String? {
        if let rawScope { return rawScope }
        guard let repository else { return nil }
        return "repository:\(repository):\(actions.joined(separator: ","))"
    }

    /// Parses `/v2/<name>/(blobs|manifests|tags|referrers)/...`.
    static func from(method: String, path: String) -> RequiredScope? {
        guard path == "/v2" || path.hasPrefix("/v2/") else { return nil }
        let components = path.split(separator: "/", omittingEmptySubsequences: true).dropFirst().map(String.init)
        if components.isEmpty { return RequiredScope(repository: nil, actions: []) }
        if components == ["_catalog"] {
            return RequiredScope(repository: nil, actions: ["*"], rawScope: "registry:catalog:*")
        }
        let keywords: Set<String> = ["blobs", "manifests", "tags", "referrers"]
        guard let index = components.lastIndex(where: { keywords.contains($0) }), index > 0 else {
            return RequiredScope(repository: components.joined(separator: "/"), actions: actionsFor(method))
        }
        // For uploads "/name/blobs/uploads/<uuid>" the last keyword is still "blobs".
        let name = components[..<index].joined(separator: "/")
        return RequiredScope(repository: name, actions: actionsFor(method))
    }

    static func actionsFor(_ method: String) -> [String] {
        let m = method.uppercased()
        return (m == "GET" || m == "HEAD") ? ["pull"] : ["pull", "push"]
    }
}

/// Parses "repository:name:pull,push" into (name, actions).
func parseRepositoryScope(_ scope: String) -> (name: String, actions: [String])? {
    guard scope.hasPrefix("repository:") else { return nil }
    let rest = scope.dropFirst("repository:".count)
    guard let colon = rest.lastIndex(of: ":") else { return nil }
    let name = String(rest[..<colon])
    let actions = rest[rest.index(after: colon)...].split(separator: ",").map(String.init)
    return (name, actions)
}

/// Decodes "Basic base64(user:pass)".
func decodeBasicAuthorization(_ header: String) -> BasicCredentials? {
    let parts = header.split(separator: " ", maxSplits: 1)
    guard parts.count == 2, parts[0].lowercased() == "basic",
        let data = Data(base64Encoded: String(parts[1]).trimmingCharacters(in: .whitespaces)),
        let text = String(data: data, encoding: .utf8),
        let colon = text.firstIndex(of: ":")
    else { return nil }
    return BasicCredentials(username: String(text[..<colon]), password: String(text[text.index(after: colon)...]))
}

/// Extracts the token from "Bearer <token>".
func decodeBearerAuthorization(_ header: String) -> String? {
    let parts = header.split(separator: " ", maxSplits: 1)
    guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
    return String(parts[1]).trimmingCharacters(in: .whitespaces)
}

func randomToken() -> String {
    var generator = SystemRandomNumberGenerator()
    let bytes = (0..<24).map { _ in UInt8.random(in: 0...255, using: &generator) }
    return Data(bytes).base64EncodedString()
        .replacingOccurrences(of: "+", with: "-")
        .replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}

/// Splits a query string into (name, value) pairs with percent-decoding
/// ("+" is a space, as in forms).
func parseQuery(_ query: String?) -> [(String, String)] {
    guard let query, !query.isEmpty else { return [] }
    return query.split(separator: "&").map { item in
        let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        func decode(_ s: Substring) -> String {
            let plus = s.replacingOccurrences(of: "+", with: " ")
            return plus.removingPercentEncoding ?? plus
        }
        return (decode(pair[0]), pair.count > 1 ? decode(pair[1]) : "")
    }
}
