import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Takes over SIGINT, SIGTERM and SIGHUP for the length of a run so that they never kill Slipway before it has
/// cleaned up: while the runtime runs they are passed on to it (and so to the container); before it started they
/// interrupt the preparation (`onInterrupt`), and are passed on to the runtime if it starts anyway.
public final class SignalForwarder: @unchecked Sendable {
    private struct State {
        var target: pid_t?
        var pending: [Int32] = []
        var received: [Int32] = []
    }
    private let state = Mutex(State())
    private let onInterrupt: Mutex<(@Sendable (Int32) -> Void)?> = Mutex(nil)
    // Touched only by init and cancel.
    private var sources: [any DispatchSourceSignal] = []
    private var previous: [(Int32, __sighandler_t?)] = []
    public let signals: [Int32]

    public init(signals: [Int32] = [SIGINT, SIGTERM, SIGHUP]) {
        self.signals = signals
        sources = signals.map { number in
            previous.append((number, signal(number, SIG_IGN)))
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [weak self] in self?.deliver(number) }
            source.resume()
            return source
        }
    }

    /// Called (on a dispatch queue) for a signal that arrives while no runtime process runs.
    public func setInterruptHandler(_ handler: (@Sendable (Int32) -> Void)?) {
        onInterrupt.withLock { $0 = handler }
    }

    /// The first signal received, if any.
    public var firstSignal: Int32? { state.withLock { $0.received.first } }

    /// Sets the process signals go to from now on; signals that arrived while there was none are sent now.
    public func setTarget(_ pid: pid_t?) {
        let pending = state.withLock { state -> [Int32] in
            state.target = pid
            guard pid != nil else { return [] }
            defer { state.pending = [] }
            return state.pending
        }
        if let pid { for number in pending { kill(pid, number) } }
    }

    private func deliver(_ number: Int32) {
        let target = state.withLock { state -> pid_t? in
            state.received.append(number)
            if state.target == nil { state.pending.append(number) }
            return state.target
        }
        if let target {
            kill(target, number)
        } else {
            onInterrupt.withLock { $0 }?(number)
        }
    }

    /// Restores the dispositions found at init.
    public func cancel() {
        sources.forEach { $0.cancel() }
        sources = []
        for (number, handler) in previous { signal(number, handler) }
        previous = []
    }
}
