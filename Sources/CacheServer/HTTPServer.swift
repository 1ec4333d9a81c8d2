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
    /// Who the client is for rate limits: its IPv4 address, or the /64 network of its IPv6 address (one host
    /// usually has a whole /64 to choose addresses from).
    var clientKey: String
}

/// Answers one request by writing to a `ResponseWriter`. Throwing after the head was sent cuts the connection,
/// which is how a client learns that a streamed body will not complete.
protocol HTTPHandler: Sendable {
    func handle(_ request: HTTPRequest, response: ResponseWriter) async throws
}

/// An HTTP/1.1 server on NIO's async channels: one task per connection, keep-alive, backpressure from the socket
/// to the body writer, and a graceful stop (no new connections, idle ones closed, busy ones finish their
/// response within a grace period). Clients that send requests too slowly or not at all are cut (`limits`), and
/// connections beyond the limit take the place of idle ones or are turned away with a 503.
final class HTTPServer: Sendable {
    private let logger: Logger
    private let limits: ConnectionLimits
    private let connections: ConnectionTable
    private let serverChannel = Mutex<(any Channel)?>(nil)

    init(limits: ConnectionLimits, logger: Logger) {
        self.logger = logger
        self.limits = limits
        self.connections = ConnectionTable(maxConnections: limits.maxConnections)
    }

    /// Binds and serves until `stop()`; `onListening` gets the bound address (port 0 picks a free one).
    func run(host: String, port: Int, handler: any HTTPHandler, onListening: @Sendable (SocketAddress) -> Void) async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { [logger] channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(AcceptPause(logger: logger)) }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 4)
            .bind(host: host, port: port) { [connections, limits] channel in
                channel.eventLoop.makeCompletedFuture {
                    try Self.initialize(channel, connections: connections, limits: limits)
                }
            }
        serverChannel.withLock { $0 = server.channel }
        if let address = server.channel.localAddress { onListening(address) }
        try await withThrowingDiscardingTaskGroup { group in
            try await server.executeThenClose { inbound in
                for try await connection in inbound {
                    guard let connection else { continue }
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

    /// Sets up an accepted connection on its event loop: admitted, it gets the HTTP pipeline between the observers
    /// that time its requests; over the limit, the 503 (nil: no task serves it).
    private static func initialize(_ channel: any Channel, connections: ConnectionTable, limits: ConnectionLimits) throws
        -> NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>?
    {
        switch connections.admit(channel) {
        case .dropped:
            channel.close(promise: nil)
            return nil
        case .rejected:
            channel.closeFuture.whenComplete { _ in connections.rejectionFinished() }
            try channel.pipeline.syncOperations.addHandler(ConnectionRejectionHandler(maxConnections: limits.maxConnections))
            return nil
        case .admitted(let id):
            channel.closeFuture.whenComplete { _ in connections.remove(id) }
            let deadlines = RequestReadDeadlines(channel: channel, limits: limits, connections: connections, id: id)
            try channel.pipeline.syncOperations.addHandler(InboundBytesObserver(deadlines))
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
            try channel.pipeline.syncOperations.addHandler(RequestProgressObserver(deadlines))
            return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
        }
    }

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, handler: any HTTPHandler) async {
        let channel = connection.channel
        let remote = channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
        let clientKey = Self.clientKey(channel.remoteAddress)
        let current = RequestInFlight()
        channel.closeFuture.whenComplete { _ in current.connectionClosed() }
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
                    let request = HTTPRequest(method: head.method, uri: head.uri, headers: head.headers, remoteAddress: remote, clientKey: clientKey)
                    let response = ResponseWriter(outbound: outbound, allocator: channel.allocator, version: head.version, keepAlive: keepAlive, method: head.method)
                    try await current.run { try await handler.handle(request, response: response) }
                    try await response.finishIfNeeded()
                }
            }
        } catch {
            logger.debug("connection from \(remote) ended: \(error)")
        }
    }

    static func clientKey(_ address: SocketAddress?) -> String {
        guard case .v6(let v6) = address else { return address?.ipAddress ?? "?" }
        let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
        let v4Mapped = bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff
        if v4Mapped { return bytes[12...].map(String.init).joined(separator: ".") }
        let groups = stride(from: 0, to: 8, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
        return groups.joined(separator: ":") + "::/64"
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

/// The request a connection is serving, cancelled when the connection closes: a client that hangs up stops what
/// its request was doing upstream (a tag list's pagination, a range pass-through), not only the writing of its
/// answer, which would otherwise start only once that work ended. Blob fills shared with other clients run in
/// tasks of their own and go on.
final class RequestInFlight: Sendable {
    private struct State {
        var task: Task<Void, any Error>?
        var closed = false
    }
    private let state = Mutex(State())

    func run(_ work: @escaping @Sendable () async throws -> Void) async throws {
        let task = Task { try await work() }
        let closed = state.withLock { state in
            state.task = task
            return state.closed
        }
        if closed { task.cancel() }
        defer { state.withLock { $0.task = nil } }
        try await withTaskCancellationHandler { try await task.value } onCancel: { task.cancel() }
    }

    func connectionClosed() {
        let task = state.withLock { state in
            state.closed = true
            return state.task
        }
        task?.cancel()
    }
}
