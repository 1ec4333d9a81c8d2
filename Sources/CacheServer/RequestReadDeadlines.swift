import NIOCore
import NIOHTTP1

/// Times how a connection sends its requests: waiting for a request (the first, or the next on a keep-alive
/// connection) it may stay silent for the idle timeout; once a request's first byte arrives, the whole request
/// must follow within the header timeout. While a request is being answered nothing is timed, however long the
/// answer takes (a cold blob streaming from upstream, a slow download): only reading requests is.
///
/// Lives on the connection's event loop; `InboundBytesObserver` (first in the pipeline, raw bytes) and
/// `RequestProgressObserver` (last, parsed parts) report to it.
final class RequestReadDeadlines {
    private enum Phase {
        case awaitingRequest
        case readingRequest
        case answering
    }

    private let channel: any Channel
    private let limits: ConnectionLimits
    private let connections: ConnectionTable
    private let id: UInt64
    private var phase = Phase.awaitingRequest
    private var timer: Scheduled<Void>?
    private var started = false
    /// Requests read completely whose responses are not completely written yet (more than one when pipelined).
    private var unansweredRequests = 0
    /// Bytes arrived since the last complete request: a request is on its way.
    private var requestUnderway = false

    init(channel: any Channel, limits: ConnectionLimits, connections: ConnectionTable, id: UInt64) {
        self.channel = channel
        self.limits = limits
        self.connections = connections
        self.id = id
    }

    func connectionStarted() {
        guard !started else { return }
        started = true
        arm(limits.idleTimeout)
    }

    func bytesArrived() {
        guard !requestUnderway else { return }
        requestUnderway = true
        update()
    }

    /// A request's end was parsed (its bytes may have arrived earlier, pipelined behind the previous request).
    func requestRead() {
        requestUnderway = false
        unansweredRequests += 1
        update()
    }

    /// A response's last byte was handed to the socket: only then may the connection count as idle, so that
    /// closing it (idle timeout, or to make room) cannot cut a response short.
    func responseFinished() {
        unansweredRequests = max(0, unansweredRequests - 1)
        update()
    }

    private func update() {
        let next: Phase = unansweredRequests > 0 ? .answering : requestUnderway ? .readingRequest : .awaitingRequest
        guard next != phase else { return }
        phase = next
        switch next {
        case .answering:
            connections.markBusy(id)
            disarm()
        case .readingRequest:
            connections.markBusy(id)
            arm(limits.headerTimeout)
        case .awaitingRequest:
            connections.markIdle(id)
            arm(limits.idleTimeout)
        }
    }

    func connectionEnded() {
        disarm()
    }

    private func arm(_ timeout: Duration) {
        disarm()
        let channel = self.channel
        timer = channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) { channel.close(promise: nil) }
    }

    private func disarm() {
        timer?.cancel()
        timer = nil
    }
}

/// First in the pipeline: tells the deadlines when bytes arrive, before any parsing.
final class InboundBytesObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let deadlines: RequestReadDeadlines

    init(_ deadlines: RequestReadDeadlines) {
        self.deadlines = deadlines
    }

    // The handler may be added before or after the accepted channel became active.
    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { deadlines.connectionStarted() }
    }

    func channelActive(context: ChannelHandlerContext) {
        deadlines.connectionStarted()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if unwrapInboundIn(data).readableBytes > 0 { deadlines.bytesArrived() }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadlines.connectionEnded()
        context.fireChannelInactive()
    }
}

/// Last in the pipeline, beside the request handler: tells the deadlines when a request was read completely and
/// when its response was.
final class RequestProgressObserver: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let deadlines: RequestReadDeadlines

    init(_ deadlines: RequestReadDeadlines) {
        self.deadlines = deadlines
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .end = unwrapInboundIn(data) { deadlines.requestRead() }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.assumeIsolated().whenComplete { [deadlines] result in
            if case .success = result { deadlines.responseFinished() }
            promise?.completeWith(result)
        }
        context.write(data, promise: written)
    }
}
