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
        var escalation: Escalation?
        var escalationScheduled = false
        var pending: [Int32] = []
        var received: [Int32] = []
    }

    /// What to do when the target is still running a while after a signal was passed on to it: a container's
    /// PID 1 without a handler ignores SIGTERM, and a scheduler (Slurm's KillWait) would SIGKILL Slipway before
    /// it could clean up.
    public struct Escalation: Sendable {
        public var after: Double
        public var action: @Sendable () -> Void
        public init(after seconds: Double, action: @escaping @Sendable () -> Void) {
            self.after = seconds
            self.action = action
        }
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
    /// `escalation` runs if the target is still the target `escalation.after` seconds after the first signal
    /// passed on to it.
    public func setTarget(_ pid: pid_t?, escalation: Escalation? = nil) {
        let pending = state.withLock { state -> [Int32] in
            state.target = pid
            state.escalation = pid == nil ? nil : escalation
            state.escalationScheduled = false
            guard pid != nil else { return [] }
            defer { state.pending = [] }
            return state.pending
        }
        if let pid {
            for number in pending { kill(pid, number) }
            if !pending.isEmpty { scheduleEscalation(for: pid) }
        }
    }

    private func deliver(_ number: Int32) {
        let target = state.withLock { state -> pid_t? in
            state.received.append(number)
            if state.target == nil { state.pending.append(number) }
            return state.target
        }
        if let target {
            kill(target, number)
            scheduleEscalation(for: target)
        } else {
            onInterrupt.withLock { $0 }?(number)
        }
    }

    private func scheduleEscalation(for pid: pid_t) {
        let escalation = state.withLock { state -> Escalation? in
            guard !state.escalationScheduled, let escalation = state.escalation else { return nil }
            state.escalationScheduled = true
            return escalation
        }
        guard let escalation else { return }
        DispatchQueue.global().asyncAfter(deadline: .now() + escalation.after) { [weak self] in
            guard let self, self.state.withLock({ $0.target == pid }) else { return }
            escalation.action()
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
