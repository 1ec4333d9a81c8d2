import NIOCore

/// The whole pipeline of a connection beyond the limit: writes a 503 in the distribution spec's error format and
/// closes. The request is never parsed; what the client sends is read and dropped (a little, briefly) only so that
/// closing does not reset the connection before the client has read the answer.
final class ConnectionRejectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Bytes and time spent draining the client's request before closing regardless.
    static let drainLimit = 64 << 10
    static let drainTime = TimeAmount.seconds(2)

    private let maxConnections: Int
    private var drained = 0
    private var answered = false

    init(maxConnections: Int) {
        self.maxConnections = maxConnections
    }

    static func response(maxConnections: Int) -> [UInt8] {
        let answer = RegistryErrorAnswer(
            status: 503, code: "UNAVAILABLE", message: "the cache is serving its limit of \(maxConnections) connections; retry later")
        let body = answer.body
        let head =
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n"
            + "Retry-After: 1\r\nConnection: close\r\n\r\n"
        return Array(head.utf8) + body
    }

    // The handler may be added before or after the accepted channel became active.
    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { answer(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        answer(context: context)
        context.fireChannelActive()
    }

    private func answer(context: ChannelHandlerContext) {
        guard !answered else { return }
        answered = true
        let channel = context.channel
        context.eventLoop.scheduleTask(in: Self.drainTime) { channel.close(promise: nil) }
        let response = channel.allocator.buffer(bytes: Self.response(maxConnections: maxConnections))
        context.writeAndFlush(wrapOutboundOut(response)).whenComplete { _ in
            channel.close(mode: .output, promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        drained += unwrapInboundIn(data).readableBytes
        if drained > Self.drainLimit { context.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
