import NIOCore
import Synchronization

/// The server's open connections: admits new ones up to the limit, knows which are idle (waiting for a request)
/// so that a new client can take the place of the longest idle one, and closes them all for a graceful stop.
final class ConnectionTable: Sendable {
    enum Admission: Equatable {
        case admitted(id: UInt64)
        /// Over the limit with no idle connection to close: answer 503 and close.
        case rejected
        /// Too many are being turned away already, or the server is stopping: close without a word.
        case dropped
    }

    private struct Entry {
        var channel: any Channel
        /// Set while the connection waits for a request; orders idle connections from the longest idle.
        var idleSequence: UInt64?
    }

    private struct State {
        var nextID: UInt64 = 0
        var nextIdleSequence: UInt64 = 0
        var entries: [UInt64: Entry] = [:]
        /// Idle connections, longest idle first. Entries whose connection has since become busy (or idle again,
        /// with a newer sequence) are stale and skipped.
        var idleOrder = CircularBuffer<(id: UInt64, sequence: UInt64)>()
        var rejecting = 0
        var shuttingDown = false

        mutating func markIdle(_ id: UInt64) {
            guard entries[id] != nil else { return }
            nextIdleSequence += 1
            entries[id]!.idleSequence = nextIdleSequence
            idleOrder.append((id, nextIdleSequence))
            if idleOrder.count > 2 * entries.count + 64 { compactIdleOrder() }
        }

        mutating func takeLongestIdle() -> (any Channel)? {
            while let candidate = idleOrder.popFirst() {
                if let entry = entries[candidate.id], entry.idleSequence == candidate.sequence {
                    entries.removeValue(forKey: candidate.id)
                    return entry.channel
                }
            }
            return nil
        }

        /// Drops stale entries, so a client making many requests on one connection cannot grow the queue.
        private mutating func compactIdleOrder() {
            let idle = entries.compactMap { id, entry in entry.idleSequence.map { (id: id, sequence: $0) } }
            idleOrder = CircularBuffer(idle.sorted { $0.sequence < $1.sequence })
        }
    }

    private let state = Mutex(State())
    let maxConnections: Int
    /// How many connections may be in the middle of getting their 503 at once; beyond it they are closed at once,
    /// so a flood cannot use the descriptors kept in reserve.
    let maxRejecting: Int

    init(maxConnections: Int, maxRejecting: Int = 64) {
        self.maxConnections = maxConnections
        self.maxRejecting = maxRejecting
    }

    var isShuttingDown: Bool { state.withLock { $0.shuttingDown } }
    var isEmpty: Bool { state.withLock { $0.entries.isEmpty } }
    var count: Int { state.withLock { $0.entries.count } }

    /// Decides about a connection just accepted. An admitted connection starts idle; at the limit the longest idle
    /// connection is closed to make room.
    func admit(_ channel: any Channel) -> Admission {
        var evicted: (any Channel)?
        let admission: Admission = state.withLock { state in
            guard !state.shuttingDown else { return .dropped }
            if state.entries.count >= maxConnections {
                evicted = state.takeLongestIdle()
                if evicted == nil {
                    guard state.rejecting < maxRejecting else { return .dropped }
                    state.rejecting += 1
                    return .rejected
                }
            }
            state.nextID += 1
            let id = state.nextID
            state.entries[id] = Entry(channel: channel, idleSequence: nil)
            state.markIdle(id)
            return .admitted(id: id)
        }
        evicted?.close(promise: nil)
        return admission
    }

    func markIdle(_ id: UInt64) { state.withLock { $0.markIdle(id) } }
    func markBusy(_ id: UInt64) { state.withLock { $0.entries[id]?.idleSequence = nil } }
    func remove(_ id: UInt64) { _ = state.withLock { $0.entries.removeValue(forKey: id) } }
    func rejectionFinished() { state.withLock { $0.rejecting -= 1 } }

    /// Idle connections close now, busy ones after their current response (NIO's pipeline handler knows which).
    func beginShutdown() {
        let all = state.withLock { state in
            state.shuttingDown = true
            return state.entries.values.map(\.channel)
        }
        for channel in all { channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent()) }
    }

    func closeAll() {
        let all = state.withLock { $0.entries.values.map(\.channel) }
        for channel in all { channel.close(promise: nil) }
    }
}
