import Foundation

/// Runs `work` on a thread of its own and suspends the caller until it returns: the one way Slipway moves blocking
/// work (file I/O, fsync, waiting for a process or a FUSE session, CPU-bound decoding) off Swift's cooperative
/// pool, which has as few threads as cores (two on CI machines; the tests run with one, see scripts/test) and which
/// every download and server connection needs.
///
/// A new thread per call rather than a bounded pool: work items wait on each other (a decoder thread pulls bytes a
/// download task pushes, an unpacker waits for a layer another item extracts), and a bounded pool would deadlock
/// once all its threads waited on items queued behind them. Callers hand over whole units (a blob, a layer, a
/// process), never a chunk, so starting a thread is negligible beside the work.
///
/// The stack is 8 MiB, as the main thread's: layer extraction and tree walks recurse as deep as the image's paths.
package func runBlocking<T: Sendable, Failure: Error>(
    _ work: @escaping @Sendable () throws(Failure) -> T
) async throws(Failure) -> T {
    let result: Result<T, Failure> = await withCheckedContinuation { continuation in
        startThread { continuation.resume(returning: Result(catching: work)) }
    }
    return try result.get()
}

func startThread(_ body: @escaping @Sendable () -> Void) {
    let thread = Thread(block: body)
    thread.stackSize = 8 << 20
    thread.start()
}
