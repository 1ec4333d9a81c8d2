import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A registry-speaking HTTP/1.1 server on loopback whose every answer is scripted by the test: for a path, a
/// status, headers and a body, however wrong. For testing what clients and the cache server do with a hostile
/// upstream (negative sizes, malformed headers, absurd numbers, token endpoints that lie).
///
/// ```swift
/// try await HostileRegistry.withServer(routes: [
///     .path("/v2/", status: 200, body: "{}"),
///     .path("/v2/a/tags/list", headers: [("Link", "<broken")], body: #"{"tags":["x"]}"#),
///     .bearerChallenge(prefix: "/v2/a/"),
///     .path("/token", body: #"{"token":"t","expires_in":1e300}"#),
/// ]) { server in
///     // point a client at server.host ("127.0.0.1:PORT") or server.url
///     #expect(server.requests(pathPrefix: "/token").count == 1)
/// }
/// ```
///
/// Routes are tried in order; the first that matches the method and path answers. Unmatched requests get 404
/// with the distribution spec's error body. Every request is recorded.
public final class HostileRegistry: Sendable {
    /// "127.0.0.1:PORT"
    public let host: String
    public let port: Int
    /// "http://127.0.0.1:PORT"
    public var url: String { "http://\(host)" }
    /// The Unix socket this server also listens on, when asked for one.
    public let unixSocketPath: String?

    private let core: HostileCore
    private let channels: [any Channel]

    private init(core: HostileCore, channels: [any Channel], port: Int, unixSocketPath: String?) {
        self.core = core
        self.channels = channels
        self.port = port
        self.host = "127.0.0.1:\(port)"
        self.unixSocketPath = unixSocketPath
    }

    deinit { for channel in channels { channel.close(promise: nil) } }

    /// Starts a server on a free loopback port (and on `unixSocketPath` when given, with the same routes).
    public static func start(routes: [HostileRoute], unixSocketPath: String? = nil) async throws -> HostileRegistry {
        let core = HostileCore(routes: routes)
        let tcp = try await bootstrap(core).bind(host: "127.0.0.1", port: 0).get()
        guard let port = tcp.localAddress?.port else {
            try? await tcp.close()
            throw TestSupportError("hostile registry has no local port")
        }
        core.setHost("127.0.0.1:\(port)")
        var channels: [any Channel] = [tcp]
        if let unixSocketPath {
            do {
                channels.append(try await bootstrap(core).bind(unixDomainSocketPath: unixSocketPath, cleanupExistingSocketFile: true).get())
            } catch {
                try? await tcp.close()
                throw error
            }
        }
        return HostileRegistry(core: core, channels: channels, port: port, unixSocketPath: unixSocketPath)
    }

    /// Starts a server, runs `body` with it, and stops it (also when `body` throws).
    public static func withServer<T>(
        routes: [HostileRoute], unixSocketPath: String? = nil, _ body: (HostileRegistry) async throws -> T
    ) async throws -> T {
        try await withStopped(try await start(routes: routes, unixSocketPath: unixSocketPath), stop: { await $0.stop() }, body)
    }

    private static func bootstrap(_ core: HostileCore) -> ServerBootstrap {
        ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(HostileHandler(core: core))
                }
            }
    }

    /// Stops listening; connections in flight are left to end.
    public func stop() async {
        for channel in channels { try? await channel.close() }
    }

    /// Replaces the routes (for a test that changes the script half way).
    public func setRoutes(_ routes: [HostileRoute]) { core.state.withLock { $0.routes = routes } }

    /// Every request so far, in arrival order.
    public var requests: [HostileRequest] { core.state.withLock { $0.log } }

    /// Requests whose path starts with `pathPrefix`.
    public func requests(pathPrefix: String) -> [HostileRequest] { requests.filter { $0.path.hasPrefix(pathPrefix) } }
}

/// A request as the hostile registry saw it.
public struct HostileRequest: Sendable {
    public var method: String
    /// Path and query as sent.
    public var uri: String
    public var headers: [(name: String, value: String)]
    /// "127.0.0.1:PORT" of the server, for answers that point back at it (a token realm, a Link).
    public var serverHost: String

    /// The path without the query.
    public var path: String { String(uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]) }

    /// The first header of that name (case-insensitive).
    public func header(_ name: String) -> String? { headers.first { $0.name.lowercased() == name.lowercased() }?.value }
}

/// A scripted answer.
public struct HostileResponse: Sendable {
    public enum Body: Sendable {
        case bytes([UInt8])
        /// Chunks produced on demand (chunk number from 0; nil ends the body), written one after the other as the
        /// client reads them. Without a Content-Length header the body goes with chunked transfer encoding.
        case generated(@Sendable (Int) -> [UInt8]?)
    }

    public var status: Int
    /// Sent as given: a test may set a lying Content-Length or Content-Range.
    public var headers: [(String, String)]
    public var body: Body

    public init(status: Int = 200, headers: [(String, String)] = [], body: Body = .bytes([])) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public init(status: Int = 200, headers: [(String, String)] = [], body: String) {
        self.init(status: status, headers: headers, body: .bytes(Array(body.utf8)))
    }
}

/// One scripted route: which requests it answers and how.
public struct HostileRoute: Sendable {
    public enum PathMatch: Sendable {
        case exact(String)
        case prefix(String)
        /// A regular expression searched in the path (anchor it yourself).
        case regex(String)

        func matches(_ path: String) -> Bool {
            switch self {
            case .exact(let expected): return path == expected
            case .prefix(let prefix): return path.hasPrefix(prefix)
            case .regex(let pattern): return path.range(of: pattern, options: .regularExpression) != nil
            }
        }
    }

    public var method: String?
    public var match: PathMatch
    /// A further test of the request (a header present or not); nil: the path and method decide.
    public var condition: (@Sendable (HostileRequest) -> Bool)?
    public var respond: @Sendable (HostileRequest) -> HostileResponse

    /// Answers requests matching `match`, `method` (when given) and `condition` (when given) with whatever
    /// `respond` returns.
    public init(
        method: String? = nil, _ match: PathMatch, condition: (@Sendable (HostileRequest) -> Bool)? = nil,
        respond: @escaping @Sendable (HostileRequest) -> HostileResponse
    ) {
        self.method = method
        self.match = match
        self.condition = condition
        self.respond = respond
    }

    /// A fixed answer for one exact path.
    public static func path(
        _ path: String, method: String? = nil, status: Int = 200, headers: [(String, String)] = [], body: String = ""
    ) -> HostileRoute {
        let response = HostileResponse(status: status, headers: headers, body: body)
        return HostileRoute(method: method, .exact(path)) { _ in response }
    }

    /// A fixed answer for one exact path, with a binary body.
    public static func path(
        _ path: String, method: String? = nil, status: Int = 200, headers: [(String, String)] = [], bytes: [UInt8]
    ) -> HostileRoute {
        let response = HostileResponse(status: status, headers: headers, body: .bytes(bytes))
        return HostileRoute(method: method, .exact(path)) { _ in response }
    }

    /// Bearer token auth in front of every path under `prefix`: a request without `Authorization` gets 401 with a
    /// `WWW-Authenticate: Bearer realm=…` challenge. `realm` defaults to this server's `/token`, which the test
    /// scripts with a route of its own; a request with `Authorization` falls through to the next routes.
    public static func bearerChallenge(prefix: String = "/v2/", realm: String? = nil, service: String = "hostile") -> HostileRoute {
        HostileRoute(.prefix(prefix), condition: { $0.header("Authorization") == nil }) { request in
            let challenge = "Bearer realm=\"\(realm ?? "http://\(request.serverHost)/token")\",service=\"\(service)\""
            return HostileResponse(
                status: 401, headers: [("WWW-Authenticate", challenge), ("Content-Type", "application/json")],
                body: #"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#)
        }
    }

    func answers(_ request: HostileRequest) -> Bool {
        guard method.map({ $0.uppercased() == request.method }) ?? true, match.matches(request.path) else { return false }
        return condition?(request) ?? true
    }
}

final class HostileCore: Sendable {
    struct State {
        var routes: [HostileRoute]
        var log: [HostileRequest] = []
        var host = ""
    }
    let state: Mutex<State>

    init(routes: [HostileRoute]) { state = Mutex(State(routes: routes)) }

    func setHost(_ host: String) { state.withLock { $0.host = host } }

    func answer(method: String, uri: String, headers: HTTPHeaders) -> HostileResponse {
        state.withLock { state in
            let request = HostileRequest(method: method, uri: uri, headers: headers.map { ($0.name, $0.value) }, serverHost: state.host)
            state.log.append(request)
            guard let route = state.routes.first(where: { $0.answers(request) }) else {
                return HostileResponse(
                    status: 404, headers: [("Content-Type", "application/json")],
                    body: #"{"errors":[{"code":"NOT_FOUND","message":"no scripted route"}]}"#)
            }
            return route.respond(request)
        }
    }
}

/// One per connection: answers each request once it has been read whole.
final class HostileHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let core: HostileCore
    private var head: HTTPRequestHead?

    init(core: HostileCore) { self.core = core }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let answer = core.answer(method: head.method.rawValue, uri: head.uri, headers: head.headers)
        var headers = HTTPHeaders(answer.headers)
        let isHead = head.method == .HEAD
        if case .bytes(let bytes) = answer.body, !headers.contains(name: "Content-Length") {
            headers.add(name: "Content-Length", value: String(bytes.count))
        }
        let status = HTTPResponseStatus(statusCode: answer.status)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        switch answer.body {
        case .bytes(let bytes):
            if !isHead, !bytes.isEmpty { context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: bytes)))), promise: nil) }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        case .generated(let next):
            if isHead {
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            } else {
                writeChunks(from: 0, next: next, context: NIOLoopBound(context, eventLoop: context.eventLoop))
            }
        }
    }

    /// Writes chunk after chunk, each once the previous one was written, so the client's reading paces the generator.
    private func writeChunks(from index: Int, next: @escaping @Sendable (Int) -> [UInt8]?, context: NIOLoopBound<ChannelHandlerContext>) {
        let handler = NIOLoopBound(self, eventLoop: context.value.eventLoop)
        guard let chunk = next(index) else {
            context.value.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            return
        }
        let buffer = context.value.channel.allocator.buffer(bytes: chunk)
        context.value.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer)))).whenSuccess {
            handler.value.writeChunks(from: index + 1, next: next, context: context)
        }
    }
}
