#if canImport(Glibc)
import Glibc
#endif
import ContentStore
import Foundation
import OCI
import Synchronization

/// One upstream download of a blob into the store, shared by every client that asks for it meanwhile. Clients
/// read the bytes already written from the partial file (by `pread` on a descriptor the fill owns) and wait for
/// more; the blob is committed to the store only after its digest matched.
final class BlobFill: Sendable {
    let descriptor: Descriptor

    enum Outcome: Sendable {
        case committed
        case failed(String)
    }

    /// What a reader may use now. `generation` changes when the upstream transfer restarted from zero (a server
    /// that ignored a resume Range, or bytes that did not hash): a reader that already sent bytes of an older
    /// generation must cut its client off, because those bytes may be wrong.
    struct Snapshot: Sendable {
        var available: Int64
        var generation: Int
        /// The whole blob is in the partial file and matched its digest (the commit's fsync may still run).
        var verified = false
        var outcome: Outcome?
    }

    private struct State {
        var snapshot = Snapshot(available: 0, generation: 0, outcome: nil)
        var readDescriptor: Int32 = -1
        var lastProgress = ContinuousClock.now
        var waiters: [Int: (beyond: Int64, generation: Int, continuation: CheckedContinuation<Snapshot, any Error>)] = [:]
        var nextWaiter = 0
    }
    private let state = Mutex(State())
    /// Broadcast after every change, for the one reader on a plain thread (the gzip index builder).
    private let changed = NSCondition()

    init(descriptor: Descriptor) {
        self.descriptor = descriptor
    }

    deinit {
        let fd = state.withLock { $0.readDescriptor }
        if fd >= 0 { close(fd) }
    }

    var snapshot: Snapshot { state.withLock { $0.snapshot } }
    var lastProgress: ContinuousClock.Instant { state.withLock { $0.lastProgress } }

    /// The descriptor of the partial file, or -1 before it exists (or when another process fetched the blob).
    var readDescriptor: Int32 { state.withLock { $0.readDescriptor } }

    // MARK: Writer side

    /// Called once the partial file exists: `held` bytes may already be there from an interrupted attempt.
    func opened(path: String, held: Int64) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        update { state in
            if fd >= 0 { state.readDescriptor = fd }
            state.snapshot.available = held
        }
    }

    func advanced(to count: Int64) {
        update { state in
            state.snapshot.available = count
            state.lastProgress = .now
        }
    }

    func restarted() {
        update { state in
            state.snapshot.available = 0
            state.snapshot.generation += 1
        }
    }

    func verified() {
        update { $0.snapshot.verified = true }
    }

    func finish(_ outcome: Outcome) {
        update { $0.snapshot.outcome = outcome }
    }

    private func update(_ change: (inout State) -> Void) {
        let ready = state.withLock { state -> [(CheckedContinuation<Snapshot, any Error>, Snapshot)] in
            change(&state)
            let snapshot = state.snapshot
            var ready: [(CheckedContinuation<Snapshot, any Error>, Snapshot)] = []
            for (id, waiter) in state.waiters where Self.satisfies(snapshot, waiter.beyond, waiter.generation) {
                ready.append((waiter.continuation, snapshot))
                state.waiters.removeValue(forKey: id)
            }
            return ready
        }
        for (continuation, snapshot) in ready { continuation.resume(returning: snapshot) }
        changed.lock()
        changed.broadcast()
        changed.unlock()
    }

    /// `wait(beyond:generation:)` for a plain thread: blocks it (never call it from the cooperative pool).
    func waitBlocking(beyond offset: Int64, generation: Int) -> Snapshot {
        changed.lock()
        defer { changed.unlock() }
        while true {
            let snapshot = self.snapshot
            if Self.satisfies(snapshot, offset, generation) { return snapshot }
            changed.wait()
        }
    }

    private static func satisfies(_ snapshot: Snapshot, _ beyond: Int64, _ generation: Int) -> Bool {
        snapshot.outcome != nil || snapshot.verified || snapshot.generation != generation || snapshot.available > beyond
    }

    // MARK: Reader side

    /// Waits until more than `offset` bytes are available in `generation`, the generation changed, or the fill
    /// ended. Cancelling the waiting task (a client that went away) throws `CancellationError`.
    func wait(beyond offset: Int64, generation: Int) async throws -> Snapshot {
        let id = state.withLock { state in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Snapshot, any Error>) in
                let immediate = state.withLock { state -> Result<Snapshot, any Error>? in
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if Self.satisfies(state.snapshot, offset, generation) { return .success(state.snapshot) }
                    state.waiters[id] = (offset, generation, continuation)
                    return nil
                }
                if let immediate { continuation.resume(with: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }
}

/// Forwards a fill's bytes into the store's partial file and tells the readers how far it got.
final class FillSink: BlobSink, @unchecked Sendable {
    // Driven by the one download task of the fill, as every BlobSink is.
    private let inner: FileBlobSink
    private let fill: BlobFill
    private let onBytes: @Sendable (Int) -> Void

    init(inner: FileBlobSink, fill: BlobFill, onBytes: @escaping @Sendable (Int) -> Void) {
        self.inner = inner
        self.fill = fill
        self.onBytes = onBytes
        fill.opened(path: inner.path, held: inner.count)
    }

    var count: Int64 { inner.count }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        try inner.append(bytes)
        onBytes(bytes.count)
        fill.advanced(to: inner.count)
    }

    func reset() throws {
        try inner.reset()
        fill.restarted()
    }

    func digest(_ algorithm: Digest.Algorithm) -> Digest { inner.digest(algorithm) }
}
