import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One request/response exchange on a client connection.
private final class Exchange {
    let id: Int
    let requestHead: HTTPRequestHead
    let decision: ProxyDecision
    var fault: Fault?
    /// The local response was sent or the upstream connection was started.
    var started = false
    var requestEnded = false
    var upstream: (any Channel)?
    var pendingParts: [HTTPClientRequestPart] = []
    var responseHeadSent = false
    var responseBytes = 0
    /// For `.throttle`: when upstream reads may resume, accumulated over every chunk forwarded so far.
    var throttledUntil = NIODeadline.now()
    var aborted = false
    var lastWrite: EventLoopFuture<Void>?
    var stallTimer: Scheduled<Void>?

    init(id: Int, requestHead: HTTPRequestHead, decision: ProxyDecision) {
        self.id = id
        self.requestHead = requestHead
        self.decision = decision
        if case .forward(let fault, _) = decision { self.fault = fault }
    }
}

/// Server-side handler of ``FaultProxy``: one instance per client connection.
final class ProxyServerHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let core: ProxyCore
    private var context: ChannelHandlerContext?
    private var exchange: Exchange?

    init(core: ProxyCore) {
        self.core = core
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    private var bound: NIOLoopBound<ProxyServerHandler> {
        NIOLoopBound(self, eventLoop: context!.eventLoop)
    }

    // MARK: Inbound from the client

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            requestHead(head, context: context)
        case .body(let buffer):
            guard let ex = exchange, !ex.requestEnded else { return }
            core.recordBytes(ex.id, request: buffer.readableBytes)
            guard case .forward = ex.decision else { return }  // local answers discard the body
            let part = HTTPClientRequestPart.body(.byteBuffer(buffer))
            if let upstream = ex.upstream {
                upstream.writeAndFlush(part, promise: nil)
                if !upstream.isWritable {
                    context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
                }
            } else {
                ex.pendingParts.append(part)
            }
        case .end:
            guard let ex = exchange, !ex.requestEnded else { return }
            ex.requestEnded = true
            switch ex.decision {
            case .respond(let response):
                if ex.started { sendLocal(response, for: ex) }
            case .forward:
                if let upstream = ex.upstream {
                    upstream.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
                } else {
                    ex.pendingParts.append(.end(nil))
                }
            }
        }
    }

    private func requestHead(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let (index, decision, stall) = core.begin(
            method: head.method.rawValue, uri: head.uri,
            authorization: head.headers.first(name: "Authorization"),
            range: head.headers.first(name: "Range"))
        let ex = Exchange(id: index, requestHead: head, decision: decision)
        exchange = ex

        if head.headers[canonicalForm: "Expect"].contains(where: { $0.lowercased() == "100-continue" }) {
            let cont = HTTPResponseHead(version: head.version, status: .continue)
            context.writeAndFlush(wrapOutboundOut(.head(cont)), promise: nil)
        }

        if let stall, stall > 0 {
            let bound = self.bound
            let id = ex.id
            ex.stallTimer = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(stall * 1_000_000_000))) {
                bound.value.startExchange(id: id)
            }
        } else {
            startExchange(id: ex.id)
        }
    }

    private func startExchange(id: Int) {
        guard let ex = exchange, ex.id == id, !ex.started, context != nil else { return }
        ex.started = true
        ex.stallTimer = nil
        switch ex.decision {
        case .respond(let response):
            if ex.requestEnded { sendLocal(response, for: ex) }
        case .forward(_, let stripAuthorization):
            connectUpstream(ex, stripAuthorization: stripAuthorization)
        }
    }

    // MARK: Local answers

    private func sendLocal(_ response: LocalResponse, for ex: Exchange) {
        guard let context, exchange === ex else { return }
        var headers = HTTPHeaders(response.headers)
        let body = ByteBuffer(string: response.body)
        headers.replaceOrAdd(name: "Content-Length", value: String(body.readableBytes))
        if response.closeConnection { headers.replaceOrAdd(name: "Connection", value: "close") }
        let head = HTTPResponseHead(
            version: ex.requestHead.version, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        core.recordStatus(ex.id, status: response.status)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if ex.requestHead.method != .HEAD && body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            core.recordBytes(ex.id, response: body.readableBytes)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        exchange = nil
        if response.closeConnection {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    // MARK: Forwarding

    private func connectUpstream(_ ex: Exchange, stripAuthorization: Bool) {
        guard let context else { return }
        let bound = self.bound
        let id = ex.id
        let core = self.core

        var headers = ex.requestHead.headers
        // Hop-by-hop headers, plus any listed in Connection.
        let listed = headers[canonicalForm: "Connection"].map { String($0) }
        for name in ["Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade", "Expect", "Host"]
            + listed
        {
            headers.remove(name: name)
        }
        if stripAuthorization { headers.remove(name: "Authorization") }
        if case .ignoreRange = ex.fault {
            headers.remove(name: "Range")
            headers.remove(name: "If-Range")
        }
        headers.add(name: "Host", value: core.upstreamHostHeader)
        headers.add(name: "Connection", value: "close")
        let upstreamHead = HTTPRequestHead(
            version: .http1_1, method: ex.requestHead.method, uri: ex.requestHead.uri, headers: headers)

        ClientBootstrap(group: context.eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(UpstreamHandler(downstream: bound, id: id))
                }
            }
            .connect(host: core.upstreamAddress, port: core.upstreamPort)
            .whenComplete { result in
                bound.value.upstreamConnected(id: id, head: upstreamHead, result: result)
            }
    }

    private func upstreamConnected(id: Int, head: HTTPRequestHead, result: Result<any Channel, any Error>) {
        guard let ex = exchange, ex.id == id, context != nil else {
            if case .success(let channel) = result { channel.close(promise: nil) }
            return
        }
        switch result {
        case .failure(let error):
            core.recordAction(id, "upstream unreachable")
            sendLocal(
                LocalResponse(
                    status: 502, headers: [("Content-Type", "text/plain")],
                    body: "fault proxy: upstream unreachable: \(error)", closeConnection: true),
                for: ex)
        case .success(let channel):
            ex.upstream = channel
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            for part in ex.pendingParts { channel.write(part, promise: nil) }
            ex.pendingParts.removeAll()
            channel.flush()
        }
    }

    fileprivate func upstreamRead(id: Int, part: HTTPClientResponsePart) {
        guard let context, let ex = exchange, ex.id == id, !ex.aborted else { return }
        switch part {
        case .head(let upstreamHead):
            if case .dropResponse = ex.fault {
                core.recordStatus(id, status: Int(upstreamHead.status.code))
                abort(ex, reset: true)
                return
            }
            var headers = upstreamHead.headers
            for name in ["Connection", "Keep-Alive", "Proxy-Connection"] { headers.remove(name: name) }
            if let location = headers.first(name: "Location") {
                headers.replaceOrAdd(name: "Location", value: rewriteLocation(location))
            }
            let head = HTTPResponseHead(
                version: ex.requestHead.version, status: upstreamHead.status, headers: headers)
            ex.responseHeadSent = true
            core.recordStatus(id, status: Int(upstreamHead.status.code))
            ex.lastWrite = context.write(wrapOutboundOut(.head(head)))

        case .body(var buffer):
            switch ex.fault {
            case .flipByte(let offset):
                if offset >= ex.responseBytes && offset < ex.responseBytes + buffer.readableBytes {
                    let at = buffer.readerIndex + offset - ex.responseBytes
                    if let byte = buffer.getInteger(at: at, as: UInt8.self) {
                        buffer.setInteger(byte ^ 0xFF, at: at)
                    }
                }
            case .truncateBody(let limit), .resetAfter(let limit):
                let allowed = max(limit - ex.responseBytes, 0)
                if buffer.readableBytes >= allowed {
                    if allowed > 0, let slice = buffer.readSlice(length: allowed) {
                        ex.responseBytes += allowed
                        core.recordBytes(id, response: allowed)
                        ex.lastWrite = context.write(wrapOutboundOut(.body(.byteBuffer(slice))))
                    }
                    abort(ex, reset: isReset(ex.fault))
                    return
                }
            default:
                break
            }
            ex.responseBytes += buffer.readableBytes
            core.recordBytes(id, response: buffer.readableBytes)
            ex.lastWrite = context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))))
            if case .throttle(let rate) = ex.fault, let upstream = ex.upstream {
                // Stop reading upstream until the bytes forwarded so far would have taken this long at `rate`.
                // The debt accumulates because one NIO read cycle can deliver several chunks before it stops.
                let cost = TimeAmount.nanoseconds(Int64(Double(buffer.readableBytes) / Double(max(rate, 1)) * 1e9))
                ex.throttledUntil = max(ex.throttledUntil, .now()) + cost
                let resumeAt = ex.throttledUntil
                upstream.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
                // Scheduled on this handler's loop, which owns `ex`.
                context.eventLoop.scheduleTask(deadline: resumeAt) {
                    guard resumeAt == ex.throttledUntil else { return }  // a later chunk moved the deadline
                    upstream.setOption(ChannelOptions.autoRead, value: true).whenSuccess { upstream.read() }
                }
                return
            }
            if !context.channel.isWritable, let upstream = ex.upstream {
                upstream.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
            }

        case .end:
            switch ex.fault {
            case .truncateBody, .resetAfter:
                // The body was shorter than the limit: still drop the connection
                // instead of completing the message.
                abort(ex, reset: isReset(ex.fault))
                return
            default:
                break
            }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            exchange = nil
            ex.upstream?.close(promise: nil)
            if case .forward = ex.decision, !ex.requestEnded {
                // Upstream answered before the request body ended; keep
                // reading and discarding it.
            }
        }
    }

    private func isReset(_ fault: Fault?) -> Bool {
        if case .resetAfter = fault { return true }
        return false
    }

    private func rewriteLocation(_ location: String) -> String {
        let upstream = "//" + core.upstreamHostHeader
        guard let range = location.range(of: upstream), location[..<range.lowerBound].hasSuffix(":") else {
            return location
        }
        return location.replacingCharacters(in: range, with: "//" + core.proxyAddress)
    }

    /// Sends what was written so far, then closes the client connection:
    /// with an RST (SO_LINGER 0) when `reset`, else with a normal FIN.
    private func abort(_ ex: Exchange, reset: Bool) {
        guard let context else { return }
        ex.aborted = true
        exchange = nil
        core.recordAction(ex.id, reset ? "connection reset" : "connection closed")
        ex.upstream?.close(promise: nil)
        context.flush()
        let channel = context.channel
        let written = ex.lastWrite ?? context.eventLoop.makeSucceededVoidFuture()
        written.whenComplete { _ in
            if reset, let provider = channel as? any SocketOptionProvider {
                provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in
                    channel.close(promise: nil)
                }
            } else {
                channel.close(promise: nil)
            }
        }
    }

    fileprivate func upstreamClosed(id: Int) {
        guard let context, let ex = exchange, ex.id == id, !ex.aborted else { return }
        // The upstream went away before the response ended.
        if ex.responseHeadSent {
            exchange = nil
            core.recordAction(id, "upstream closed early")
            context.flush()
            context.close(promise: nil)
        } else {
            sendLocal(
                LocalResponse(
                    status: 502, headers: [("Content-Type", "text/plain")],
                    body: "fault proxy: upstream closed the connection", closeConnection: true),
                for: ex)
        }
    }

    fileprivate func upstreamWritabilityChanged(id: Int, writable: Bool) {
        guard let context, let ex = exchange, ex.id == id else { return }
        context.channel.setOption(ChannelOptions.autoRead, value: writable).whenFailure { _ in }
    }

    // MARK: Connection events

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let upstream = exchange?.upstream {
            upstream.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let ex = exchange {
            ex.stallTimer?.cancel()
            ex.upstream?.close(promise: nil)
            exchange = nil
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Client-side handler on the connection to the upstream server.
private final class UpstreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let downstream: NIOLoopBound<ProxyServerHandler>
    private let id: Int

    init(downstream: NIOLoopBound<ProxyServerHandler>, id: Int) {
        self.downstream = downstream
        self.id = id
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        downstream.value.upstreamRead(id: id, part: unwrapInboundIn(data))
    }

    func channelInactive(context: ChannelHandlerContext) {
        downstream.value.upstreamClosed(id: id)
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        downstream.value.upstreamWritabilityChanged(id: id, writable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
