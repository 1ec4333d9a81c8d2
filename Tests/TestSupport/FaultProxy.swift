import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// An HTTP/1.1 reverse proxy in front of a registry (or any HTTP server) on
/// loopback that forwards requests and responses as streams while injecting
/// scripted faults, recording every request, optionally emulating Docker
/// token auth, and optionally redirecting blob downloads to another proxy.
///
/// ```swift
/// let registry = try await RegistryProcess.start()
/// let proxy = try await FaultProxy.start(upstream: registry)
/// proxy.addRule(FaultRule(method: "GET", path: "/blobs/sha256:", fault: .serviceUnavailable, times: 2))
/// // ... point the client at proxy.url ...
/// #expect(proxy.requests(matching: "/blobs/sha256:", method: "GET").count == 3)
/// try await proxy.stop()
/// ```
public final class FaultProxy: Sendable {
    /// "127.0.0.1:PORT" of the proxy.
    public let host: String
    public let port: Int
    /// "http://127.0.0.1:PORT"
    public let url: URL
    /// "HOST:PORT" of the upstream server.
    public let upstreamHost: String
    public let upstreamPort: Int

    let core: ProxyCore
    private let serverChannel: any Channel

    private init(serverChannel: any Channel, core: ProxyCore, port: Int) {
        self.serverChannel = serverChannel
        self.core = core
        self.port = port
        self.host = "127.0.0.1:\(port)"
        self.url = URL(string: "http://127.0.0.1:\(port)")!
        self.upstreamHost = core.upstreamAddress
        self.upstreamPort = core.upstreamPort
    }

    deinit {
        serverChannel.close(promise: nil)
    }

    // MARK: Starting and stopping

    /// Starts a proxy on 127.0.0.1 (free port) forwarding to `upstreamHost:upstreamPort`.
    public static func start(
        upstreamHost: String = "127.0.0.1", upstreamPort: Int,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> FaultProxy {
        let core = ProxyCore(upstreamAddress: upstreamHost, upstreamPort: upstreamPort)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.configureHTTPServerPipeline(withErrorHandling: true)
                    try sync.addHandler(ProxyServerHandler(core: core))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        guard let port = channel.localAddress?.port else {
            try? await channel.close()
            throw TestSupportError("proxy has no local port")
        }
        core.setProxyAddress("127.0.0.1:\(port)")
        return FaultProxy(serverChannel: channel, core: core, port: port)
    }

    /// Starts a proxy in front of a ``RegistryProcess``.
    public static func start(upstream registry: RegistryProcess) async throws -> FaultProxy {
        try await start(upstreamHost: "127.0.0.1", upstreamPort: registry.port)
    }

    /// Starts a proxy in front of another proxy (chaining).
    public static func start(upstream proxy: FaultProxy) async throws -> FaultProxy {
        try await start(upstreamHost: "127.0.0.1", upstreamPort: proxy.port)
    }

    /// Starts a proxy, runs `body`, stops the proxy (also when `body` throws).
    public static func withProxy<T>(
        upstream registry: RegistryProcess,
        _ body: (FaultProxy) async throws -> T
    ) async throws -> T {
        try await withStopped(try await start(upstream: registry), stop: { try? await $0.stop() }, body)
    }

    /// Stops listening. Connections in flight are left to finish or fail.
    public func stop() async throws {
        do {
            try await serverChannel.close()
        } catch ChannelError.alreadyClosed {
        }
    }

    // MARK: Fault script

    /// Appends a rule. Rules are tried in order; the first matching rule with
    /// firings left is used (one fault per request).
    public func addRule(_ rule: FaultRule) { core.withState { $0.rules.append(rule) } }

    /// Appends several rules.
    public func addRules(_ rules: [FaultRule]) { core.withState { $0.rules.append(contentsOf: rules) } }

    /// Shorthand for `addRule(FaultRule(method:path:fault:times:))`.
    public func inject(
        _ fault: Fault, method: String? = nil, path: String, times: Int = 1
    ) {
        addRule(FaultRule(method: method, path: path, fault: fault, times: times))
    }

    /// Replaces the whole script.
    public func setRules(_ rules: [FaultRule]) { core.withState { $0.rules = rules } }

    /// Removes every rule.
    public func removeAllRules() { core.withState { $0.rules.removeAll() } }

    /// Rules that still have firings left.
    public var pendingRules: [FaultRule] { core.withState { $0.rules.filter { $0.times > 0 } } }

    /// Total remaining firings of all rules (0 when every fault was used).
    public var remainingFaults: Int {
        core.withState { $0.rules.reduce(0) { $0 &+ max($1.times, 0) } }
    }

    // MARK: Request log

    /// Every request seen so far, in arrival order.
    public var requestLog: [LoggedRequest] { core.withState { $0.log } }

    /// Requests whose path contains `pathFragment` (nil: any) and whose method
    /// is `method` (nil: any).
    public func requests(matching pathFragment: String? = nil, method: String? = nil) -> [LoggedRequest] {
        core.withState { state in
            state.log.filter { entry in
                (pathFragment.map { entry.path.contains($0) } ?? true)
                    && (method.map { $0.uppercased() == entry.method } ?? true)
            }
        }
    }

    /// Requests whose path matches the regular expression `pattern`.
    public func requests(matchingRegex pattern: String, method: String? = nil) -> [LoggedRequest] {
        let match = RequestMatch.pathRegex(pattern)
        return requestLog.filter { entry in
            match.matches(path: entry.path) && (method.map { $0.uppercased() == entry.method } ?? true)
        }
    }

    /// Forgets the request log (and token request log).
    public func clearLog() {
        core.withState {
            $0.log.removeAll()
            $0.tokenRequests.removeAll()
        }
    }

    // MARK: Token auth emulation

    /// Turns on token auth: `/v2/...` requests need `Authorization: Bearer`
    /// with a token from this proxy's `/token` endpoint for the right scope;
    /// the Authorization header is not forwarded upstream.
    public func enableTokenAuth(_ configuration: TokenAuthConfiguration = TokenAuthConfiguration()) {
        core.withState { $0.tokenAuth = configuration }
    }

    /// Convenience for ``enableTokenAuth(_:)``.
    public func enableTokenAuth(
        username: String, password: String, tokenLifetime: TimeInterval = 300,
        allowAnonymousPull: Bool = false
    ) {
        enableTokenAuth(
            TokenAuthConfiguration(
                credentials: BasicCredentials(username: username, password: password),
                allowAnonymousPull: allowAnonymousPull, tokenLifetime: tokenLifetime))
    }

    /// Turns token auth off (requests are forwarded with their headers again).
    public func disableTokenAuth() { core.withState { $0.tokenAuth = nil } }

    /// Forgets every issued token (clients must fetch new ones).
    public func revokeAllTokens() { core.withState { $0.tokens.removeAll() } }

    /// URL of the token endpoint ("http://127.0.0.1:PORT/token").
    public var tokenRealm: String { "http://\(host)/token" }

    /// Every call of `/token` so far.
    public var tokenRequests: [TokenRequestRecord] { core.withState { $0.tokenRequests } }

    /// Successful token requests, optionally only those that asked for `scope`
    /// (exact string, e.g. "repository:x:pull").
    public func tokenRequestCount(scope: String? = nil) -> Int {
        core.withState { state in
            state.tokenRequests.filter { record in
                record.status == 200 && (scope.map { record.scopes.contains($0) } ?? true)
            }.count
        }
    }

    // MARK: Blob redirects

    /// While set, `GET`/`HEAD /v2/<name>/blobs/<digest>` are answered with
    /// `307 Location: http://<other>/<same path and query>` (after the auth
    /// check), like a registry redirecting to a storage host.
    public func redirectBlobs(to other: FaultProxy?) {
        core.withState { $0.redirectBlobsTo = other?.host }
    }

    /// Same as ``redirectBlobs(to:)`` with an explicit "host:port".
    public func redirectBlobs(toHost host: String?) {
        core.withState { $0.redirectBlobsTo = host }
    }
}

// MARK: - Shared state and decisions

/// A response the proxy produces itself.
struct LocalResponse: Sendable {
    var status: Int
    var headers: [(String, String)]
    var body: String
    var closeConnection: Bool = false
}

/// What to do with an incoming request.
enum ProxyDecision: Sendable {
    case respond(LocalResponse)
    case forward(fault: Fault?, stripAuthorization: Bool)
}

/// Thread-safe state shared by the ``FaultProxy`` facade and its channel handlers.
final class ProxyCore: Sendable {
    struct State {
        var proxyAddress = ""
        var rules: [FaultRule] = []
        var log: [LoggedRequest] = []
        var tokenAuth: TokenAuthConfiguration?
        var tokens: [String: IssuedToken] = [:]
        var tokenRequests: [TokenRequestRecord] = []
        var redirectBlobsTo: String?
    }

    let upstreamAddress: String
    let upstreamPort: Int
    private let state = LockedBox(State())

    init(upstreamAddress: String, upstreamPort: Int) {
        self.upstreamAddress = upstreamAddress
        self.upstreamPort = upstreamPort
    }

    func withState<T>(_ body: (inout State) throws -> T) rethrows -> T {
        try state.withLock(body)
    }

    func setProxyAddress(_ address: String) { withState { $0.proxyAddress = address } }

    var proxyAddress: String { withState { $0.proxyAddress } }

    /// "host:port" the upstream's absolute `Location` headers carry.
    var upstreamHostHeader: String { "\(upstreamAddress):\(upstreamPort)" }

    /// Logs the request and decides how to handle it. Returns the log index,
    /// the decision, and a stall to apply first (if a stall rule fired).
    func begin(
        method: String, uri: String, authorization: String?, range: String?
    ) -> (index: Int, decision: ProxyDecision, stall: Double?) {
        let (path, query) = splitURI(uri)
        return withState { state in
            let index = state.log.count
            state.log.append(
                LoggedRequest(
                    id: index, date: Date(), method: method, uri: uri, path: path, query: query, range: range,
                    authorizationScheme: authorization.map { String($0.split(separator: " ").first ?? "") },
                    status: nil, action: nil, requestBodyBytes: 0, responseBodyBytes: 0))

            let isTokenEndpoint = state.tokenAuth != nil && path == "/token"

            // 1. Token auth for registry API requests.
            if let config = state.tokenAuth, !isTokenEndpoint,
                let required = RequiredScope.from(method: method, path: path)
            {
                if !Self.tokenIsValid(authorization, for: required, in: &state) {
                    state.log[index].action = "token-challenge"
                    return (index, .respond(Self.challenge(for: required, config: config, proxy: state.proxyAddress)), nil)
                }
            }

            // 2. Blob redirects.
            if let target = state.redirectBlobsTo, method == "GET" || method == "HEAD", Self.isBlobDownload(path) {
                state.log[index].action = "redirect"
                let response = LocalResponse(
                    status: 307, headers: [("Location", "http://\(target)\(uri)")], body: "")
                return (index, .respond(response), nil)
            }

            // 3. Fault script.
            var fault: Fault?
            if let ruleIndex = state.rules.firstIndex(where: { $0.times > 0 && $0.matches(method: method, path: path) }) {
                if state.rules[ruleIndex].times != Int.max { state.rules[ruleIndex].times -= 1 }
                fault = state.rules[ruleIndex].fault
                state.log[index].action = fault!.description
            }
            var stall: Double?
            if case .stall(let seconds) = fault { stall = seconds }

            if case .status(let code, let headers, let body) = fault {
                return (index, .respond(LocalResponse(status: code, headers: headers, body: body)), nil)
            }

            // 4. Token endpoint.
            if isTokenEndpoint, let config = state.tokenAuth {
                if state.log[index].action == nil { state.log[index].action = "token-endpoint" }
                let response = Self.tokenResponse(
                    method: method, query: query, authorization: authorization, config: config, state: &state)
                return (index, .respond(response), stall)
            }

            return (index, .forward(fault: fault, stripAuthorization: state.tokenAuth != nil), stall)
        }
    }

    func recordStatus(_ index: Int, status: Int) {
        withState { if $0.log.indices.contains(index) { $0.log[index].status = status } }
    }

    func recordBytes(_ index: Int, request: Int = 0, response: Int = 0) {
        withState {
            guard $0.log.indices.contains(index) else { return }
            $0.log[index].requestBodyBytes += request
            $0.log[index].responseBodyBytes += response
        }
    }

    func recordAction(_ index: Int, _ action: String) {
        withState {
            guard $0.log.indices.contains(index) else { return }
            $0.log[index].action = [$0.log[index].action, action].compactMap { $0 }.joined(separator: ", ")
        }
    }

    // MARK: Token logic

    private static func isBlobDownload(_ path: String) -> Bool {
        let components = path.split(separator: "/")
        guard components.count >= 4, components.first == "v2" else { return false }
        return components[components.count - 2] == "blobs" && components.last!.contains(":")
    }

    private static func tokenIsValid(_ authorization: String?, for required: RequiredScope, in state: inout State) -> Bool {
        guard let header = authorization, let token = decodeBearerAuthorization(header),
            let issued = state.tokens[token]
        else { return false }
        if issued.expires <= Date() {
            state.tokens[token] = nil
            return false
        }
        if let raw = required.rawScope { return issued.otherScopes.contains(raw) }
        guard let repository = required.repository else { return true }  // base endpoint
        let granted = issued.access[repository] ?? []
        return required.actions.allSatisfy { granted.contains($0) || granted.contains("*") }
    }

    private static func challenge(for required: RequiredScope, config: TokenAuthConfiguration, proxy: String) -> LocalResponse {
        var value = "Bearer realm=\"http://\(proxy)/token\",service=\"\(config.service)\""
        if let scope = required.challengeScope { value += ",scope=\"\(scope)\"" }
        let body = #"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#
        return LocalResponse(
            status: 401,
            headers: [
                ("WWW-Authenticate", value), ("Content-Type", "application/json"),
                ("Docker-Distribution-API-Version", "registry/2.0"),
            ],
            body: body)
    }

    private static func tokenResponse(
        method: String, query: String?, authorization: String?, config: TokenAuthConfiguration, state: inout State
    ) -> LocalResponse {
        let params = parseQuery(query)
        let scopes = params.filter { $0.0 == "scope" }.flatMap { $0.1.split(separator: " ").map(String.init) }
        let service = params.first { $0.0 == "service" }?.1
        let basic = authorization.flatMap(decodeBasicAuthorization)
        var record = TokenRequestRecord(
            date: Date(), scopes: scopes, service: service, username: basic?.username, status: 200, token: nil)

        guard method == "GET" else {
            record.status = 405
            state.tokenRequests.append(record)
            return LocalResponse(status: 405, headers: [("Allow", "GET")], body: "only GET is supported")
        }

        let allowedActions: Set<String>?  // nil: whatever is requested
        if let required = config.credentials {
            if let basic {
                guard basic == required else {
                    record.status = 401
                    state.tokenRequests.append(record)
                    return LocalResponse(
                        status: 401,
                        headers: [("WWW-Authenticate", "Basic realm=\"test-token-service\""), ("Content-Type", "application/json")],
                        body: #"{"details":"incorrect username or password"}"#)
                }
                allowedActions = nil
            } else if config.allowAnonymousPull {
                allowedActions = ["pull"]
            } else {
                record.status = 401
                state.tokenRequests.append(record)
                return LocalResponse(
                    status: 401,
                    headers: [("WWW-Authenticate", "Basic realm=\"test-token-service\""), ("Content-Type", "application/json")],
                    body: #"{"details":"authentication required"}"#)
            }
        } else {
            allowedActions = nil
        }

        var access: [String: Set<String>] = [:]
        var other: Set<String> = []
        for scope in scopes {
            if let (name, actions) = parseRepositoryScope(scope) {
                let granted = actions.filter { allowedActions?.contains($0) ?? true }
                access[name, default: []].formUnion(granted)
            } else if allowedActions == nil {
                other.insert(scope)
            }
        }
        let token = randomToken()
        let now = Date()
        state.tokens[token] = IssuedToken(
            access: access, otherScopes: other, expires: now.addingTimeInterval(config.tokenLifetime))
        record.token = token
        state.tokenRequests.append(record)

        let expiresIn = config.advertisedExpiresIn ?? max(1, Int(config.tokenLifetime.rounded(.up)))
        let formatter = ISO8601DateFormatter()
        let issuedAt = formatter.string(from: now)
        let body = #"{"token":"\#(token)","access_token":"\#(token)","expires_in":\#(expiresIn),"issued_at":"\#(issuedAt)"}"#
        return LocalResponse(status: 200, headers: [("Content-Type", "application/json")], body: body)
    }
}

func splitURI(_ uri: String) -> (path: String, query: String?) {
    if let q = uri.firstIndex(of: "?") {
        return (String(uri[..<q]), String(uri[uri.index(after: q)...]))
    }
    return (uri, nil)
}

/// A value guarded by a lock.
final class LockedBox<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
