#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore

/// First in the listening socket's pipeline: when accepting fails for lack of descriptors or memory, stops
/// accepting for `pause`, then tries again.
///
/// NIO's own AcceptBackoffHandler only delays the next read request: the failed accept leaves the socket
/// registered for reading, so the event loop would call accept4 again at once, tens of thousands of times a
/// second, for as long as descriptors stay exhausted. Turning autoRead off takes the socket out of the poll set.
final class AcceptPause: ChannelInboundHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    static let exhaustionErrors: Set<CInt> = [EMFILE, ENFILE, ENOBUFS, ENOMEM]

    private let pause: TimeAmount
    private let logger: Logger
    private var resume: Scheduled<Void>?
    private var lastWarning: NIODeadline?

    init(pause: TimeAmount = .milliseconds(100), logger: Logger) {
        self.pause = pause
        self.logger = logger
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? IOError, Self.exhaustionErrors.contains(error.errnoCode) {
            pauseAccepting(context: context, error: error)
        }
        context.fireErrorCaught(error)
    }

    private func pauseAccepting(context: ChannelHandlerContext, error: IOError) {
        guard let options = context.channel.syncOptions else { return }
        // Setting autoRead to the value it has does nothing, and a read requested meanwhile (by NIO's backoff) may
        // have put the socket back in the poll set: switch it on and off to be sure it is out.
        if (try? options.getOption(.autoRead)) == false { try? options.setOption(.autoRead, value: true) }
        try? options.setOption(.autoRead, value: false)
        let now = NIODeadline.now()
        if lastWarning.map({ now - $0 > .seconds(60) }) ?? true {
            lastWarning = now
            logger.warning("cannot accept connections (\(error)); retrying every \(pause.nanoseconds / 1_000_000) ms until descriptors are free")
        }
        resume?.cancel()
        let channel = context.channel
        resume = context.eventLoop.assumeIsolated().scheduleTask(in: pause) {
            try? channel.syncOptions?.setOption(.autoRead, value: true)
        }
    }
}
