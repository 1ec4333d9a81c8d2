import Foundation
import Synchronization

/// Runs async work for a caller on a plain thread (a FUSE worker, a prefetch thread) and waits at most `timeout`.
/// Never call it from a Swift concurrency thread: it blocks the calling thread.
func waitForAsync<T: Sendable>(timeout: Duration, what: String, _ work: @escaping @Sendable () async throws -> T) throws -> T {
    let outcome = Mutex<Result<T, Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    let task = Task {
        let result: Result<T, Error>
        do { result = .success(try await work()) } catch { result = .failure(error) }
        outcome.withLock { $0 = result }
        done.signal()
    }
    let nanoseconds = max(0, timeout.components.seconds) * 1_000_000_000 + max(0, timeout.components.attoseconds / 1_000_000_000)
    guard done.wait(timeout: .now() + .nanoseconds(Int(min(nanoseconds, Int64(Int.max))))) == .success else {
        task.cancel()
        throw LazyFSError.timedOut(what: what, seconds: Double(nanoseconds) / 1e9)
    }
    return try outcome.withLock { $0! }.get()
}
