import Synchronization

/// A count that tasks and threads bump concurrently (fetch calls, reads), read once they are done.
public final class Counter: Sendable {
    private let count = Mutex(0)
    public init() {}
    public func increment() { count.withLock { $0 += 1 } }
    public var value: Int { count.withLock { $0 } }
}
