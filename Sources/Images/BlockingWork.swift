import Foundation

/// Runs CPU- and disk-bound work (layer extraction, with its own helper thread) on a dedicated thread, so it never
/// occupies one of the cooperative pool's few threads that downloads need.
package func runOnDedicatedThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try work() })
        }
        thread.stackSize = 8 << 20
        thread.start()
    }
}
