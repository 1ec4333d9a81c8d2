import Synchronization

/// Runs one operation per key at a time; callers asking for a key already in flight get its result.
final class SingleFlight<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private let running = Mutex<[Key: Task<Value, any Error>]>([:])

    func run(_ key: Key, _ operation: @escaping @Sendable () async throws -> Value) async throws -> Value {
        let task = running.withLock { running in
            if let existing = running[key] { return existing }
            // Unstructured on purpose: a client that goes away must not cancel the others' shared work.
            let task = Task { try await operation() }
            running[key] = task
            return task
        }
        let result = await task.result
        running.withLock { running in
            if running[key] == task { running.removeValue(forKey: key) }
        }
        return try result.get()
    }
}
