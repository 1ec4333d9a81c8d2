import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// One parsed request: what the handlers need, nothing of NIO's channel.
struct HTTPRequest: Sendable {
    var method: HTTPMethod
    var uri: String
    var headers: HTTPHeaders
    var remoteAddress: String
}

/// Answers one request by writing to a `ResponseWriter`. Throwing after the head was sent cuts the connection,
/// which is how a client learns that a streamed body will not complete.
protocol HTTPHandler: Sendable {
    func handle(_ request: HTTPRequest, response: ResponseWriter) async throws
}

/// An HTTP/1.1 server on NIO's async channels: one task per connection, keep-alive, backpressure from the socket
/// to the body writer, and a graceful stop (no new connections, idle ones closed, busy ones finish their
/// response within a grace period).
final class HTTPServer: Sendable {
    private let logger: Logger
    private let connections = ConnectionTable()
    private let serverChannel = Mutex<(any Channel)?>(nil)

    init(logger: Logger) {
        self.logger = logger
    }

    /// Binds and serves until `stop()`; `onListening` gets the bound address (port 0 picks a free one).
    func run(host: String, port: Int, handler: any HTTPHandler, onListening: @Sendable (SocketAddress) -> Void) async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 4)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
                }
            }
        serverChannel.withLock { $0 = server.channel }
        if let address = server.channel.localAddress { onListening(address) }
        try await withThrowingDiscardingTaskGroup { group in
            try await server.executeThenClose { inbound in
                for try await connection in inbound {
                    group.addTask { await self.serve(connection, handler: handler) }
                }
            }
        }
    }

    /// Stops accepting; idle connections close at once, busy ones after their response or at the latest after `grace`.
    func stop(grace: Duration) async {
        guard let channel = serverChannel.withLock({ $0 }) else { return }
        try? await channel.close()
        connections.beginShutdown()
        let deadline = ContinuousClock.now + grace
        while !connections.isEmpty, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        connections.closeAll()
    }

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, handler: any HTTPHandler) async {
        let channel = connection.channel
        let remote = channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
        guard let id = connections.register(channel) else {
            try? await channel.close()
            return
        }
        defer { connections.remove(id) }
        do {
            try await connection.executeThenClose { inbound, outbound in
                var parts = inbound.makeAsyncIterator()
                while let part = try await parts.next() {
                    guard case .head(let head) = part else { continue }
                    // Registry reads carry no body; whatever a client sends is read and dropped.
                    while let next = try await parts.next() {
                        if case .end = next { break }
                    }
                    let keepAlive = head.isKeepAlive && !connections.isShuttingDown
                    if !keepAlive {
                        // NIO's pipeline handler then closes the connection once this response's last byte is
                        // written. Leaving the loop and closing here instead would drop bytes still queued.
                        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
                    }
                    let request = HTTPRequest(method: head.method, uri: head.uri, headers: head.headers, remoteAddress: remote)
                    let response = ResponseWriter(outbound: outbound, allocator: channel.allocator, version: head.version, keepAlive: keepAlive, method: head.method)
                    try await handler.handle(request, response: response)
                    try await response.finishIfNeeded()
                }
            }
        } catch {
            logger.debug("connection from \(remote) ended: \(error)")
        }
    }
}

/// Open connections, for the graceful stop.
private final class ConnectionTable: Sendable {
    private struct State {
        var nextID = 0
        var channels: [Int: any Channel] = [:]
        var shuttingDown = false
    }
    private let state = Mutex(State())

    var isShuttingDown: Bool { state.withLock { $0.shuttingDown } }
    var isEmpty: Bool { state.withLock { $0.channels.isEmpty } }

    func register(_ channel: any Channel) -> Int? {
        state.withLock { state in
            guard !state.shuttingDown else { return nil }
            state.nextID += 1
            state.channels[state.nextID] = channel
            return state.nextID
        }
    }

    func remove(_ id: Int) { _ = state.withLock { $0.channels.removeValue(forKey: id) } }

    /// Idle connections close now, busy ones after their current response (NIO's pipeline handler knows which).
    func beginShutdown() {
        let all = state.withLock { state in
            state.shuttingDown = true
            return Array(state.channels.values)
        }
        for channel in all { channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent()) }
    }

    func closeAll() {
        let all = state.withLock { Array($0.channels.values) }
        for channel in all { channel.close(promise: nil) }
    }
}

/// Writes one response: the head once, then body buffers with the socket's backpressure. Counts what it sent
/// for the access log and metrics.
final class ResponseWriter: @unchecked Sendable {
    // Used by the one task serving the request.
    private let outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    let allocator: ByteBufferAllocator
    private let version: HTTPVersion
    private let keepAlive: Bool
    private let isHead: Bool
    private(set) var status: HTTPResponseStatus?
    private(set) var bodyBytes: Int64 = 0
    private var ended = false

    init(outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>, allocator: ByteBufferAllocator, version: HTTPVersion, keepAlive: Bool, method: HTTPMethod) {
        self.outbound = outbound
        self.allocator = allocator
        self.version = version
        self.keepAlive = keepAlive
        self.isHead = method == .HEAD
    }

    var headSent: Bool { status != nil }

    func sendHead(_ status: HTTPResponseStatus, headers: HTTPHeaders) async throws {
        precondition(self.status == nil, "one head per response")
        self.status = status
        var headers = headers
        headers.replaceOrAdd(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        try await outbound.write(.head(HTTPResponseHead(version: version, status: status, headers: headers)))
    }

    func write(_ buffer: ByteBuffer) async throws {
        guard !isHead, buffer.readableBytes > 0 else { return }
        bodyBytes += Int64(buffer.readableBytes)
        try await outbound.write(.body(.byteBuffer(buffer)))
    }

    func end() async throws {
        guard !ended else { return }
        ended = true
        try await outbound.write(.end(nil))
    }

    /// A complete small answer.
    func send(_ status: HTTPResponseStatus, headers: HTTPHeaders = [:], body: [UInt8] = []) async throws {
        var headers = headers
        headers.replaceOrAdd(name: "Content-Length", value: String(body.count))
        try await sendHead(status, headers: headers)
        try await write(allocator.buffer(bytes: body))
        try await end()
    }

    func finishIfNeeded() async throws {
        if status == nil { try await send(.internalServerError) }
        try await end()
    }
}
