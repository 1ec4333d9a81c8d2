import Archive
import Foundation
import OCI

/// Hands a blob from a download (which pushes into a `BlobSink`) to a decoder thread (which pulls from a
/// `ChunkSource`) as it arrives, holding about `limit` bytes between them. A download task waits for the decoder in
/// `waitForRoom`, suspended; only a producer on a thread of its own (a local file copied by `copyFile`) blocks, in
/// `append`. The consumer sees the end of the
/// stream only once the whole blob matched its digest, and an error otherwise, so nothing built from the bytes is
/// kept unless they were right.
///
/// The registry client resumes an interrupted download with Range, which appends where it stopped. A server that
/// ignores Range makes it start over (`reset`): the bytes already handed on are then skipped, and hashed again, so
/// the digest still covers exactly the blob the consumer saw.
package final class StreamingBlobSink: BlobSink, @unchecked Sendable {
    // All state is guarded by `condition`.
    private let condition = NSCondition()
    private let descriptor: Descriptor
    private let limit: Int
    private var queue: [[UInt8]] = []
    private var queueHead = 0
    private var queuedBytes = 0
    private var hasher: DigestHasher
    private var received: Int64 = 0
    private var delivered: Int64 = 0
    private var outcome: Result<Void, Error>?
    private var cancelled = false
    private var stoppedEarly = false
    /// The producer suspended in `waitForRoom`, resumed once the consumer took the queue below `limit`.
    private var roomWaiter: CheckedContinuation<Void, Error>?

    package init(_ descriptor: Descriptor, limit: Int = 8 << 20) {
        self.descriptor = descriptor
        self.limit = limit
        hasher = DigestHasher(descriptor.digest.algorithm)
    }

    package var count: Int64 {
        condition.lock()
        defer { condition.unlock() }
        return received
    }

    /// Blocks while the consumer is `limit` bytes behind (never after `waitForRoom` returned, there being one
    /// producer): the copy slows to the decoder's pace.
    package func append(_ bytes: UnsafeRawBufferPointer) throws {
        condition.lock()
        defer { condition.unlock() }
        while queuedBytes >= limit && !cancelled { condition.wait() }
        if cancelled { throw stopped }
        hasher.update(bytes)
        let start = received
        received += Int64(bytes.count)
        guard received > delivered else { return }
        let fresh = UnsafeRawBufferPointer(rebasing: bytes[Int(max(0, delivered - start))...])
        queue.append(Array(fresh))
        queuedBytes += fresh.count
        delivered = received
        condition.broadcast()
    }

    /// Suspends while the consumer is `limit` bytes behind: the download slows to the decoder's pace without
    /// holding a thread.
    package func waitForRoom() async throws {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
                condition.lock()
                if cancelled {
                    condition.unlock()
                    continuation.resume(throwing: stopped)
                } else if queuedBytes < limit || Task.isCancelled {
                    condition.unlock()
                    continuation.resume()
                } else {
                    roomWaiter = continuation
                    condition.unlock()
                }
            }
        } onCancel: {
            resumeRoomWaiter()
        }
        try Task.checkCancellation()
    }

    /// Takes the suspended producer, if any, out of the state; the caller resumes it outside the lock.
    private func takeRoomWaiter() -> CheckedContinuation<Void, Error>? {
        defer { roomWaiter = nil }
        return roomWaiter
    }

    private func resumeRoomWaiter() {
        condition.lock()
        let waiter = takeRoomWaiter()
        let stop = cancelled
        condition.unlock()
        if stop { waiter?.resume(throwing: stopped) } else { waiter?.resume() }
    }

    private var stopped: BlobSinkError { BlobSinkError("the reader of \(descriptor.digest.short) stopped") }

    package func reset() throws {
        condition.lock()
        defer { condition.unlock() }
        hasher = DigestHasher(descriptor.digest.algorithm)
        received = 0
    }

    package func digest(_ algorithm: Digest.Algorithm) -> Digest {
        condition.lock()
        defer { condition.unlock() }
        precondition(algorithm == descriptor.digest.algorithm, "a streaming sink hashes with the descriptor's algorithm")
        let copy = hasher
        return copy.finalize()
    }

    /// Producer: the download ended (`error` nil) or failed.
    package func finish(error: Error?) {
        condition.lock()
        defer { condition.unlock() }
        if let error {
            outcome = .failure(error)
        } else if received != descriptor.size || delivered != descriptor.size {
            outcome = .failure(BlobSinkError("\(descriptor.digest.short): received \(received) of \(descriptor.size) bytes"))
        } else {
            let copy = hasher
            let actual = copy.finalize()
            outcome = actual == descriptor.digest
                ? .success(())
                : .failure(BlobSinkError("blob \(descriptor.digest) arrived with digest \(actual)"))
        }
        condition.broadcast()
    }

    /// Consumer: the bytes as they arrive; nil after the last byte once the digest matched.
    package var chunks: ChunkSource { ChunkSource(expectedSize: descriptor.size) { [self] in try nextChunk() } }

    /// Consumer: the next bytes, blocking until they arrive; nil after the last byte once the digest matched.
    package func nextChunk() throws -> [UInt8]? {
        condition.lock()
        while queueHead == queue.count && outcome == nil { condition.wait() }
        if queueHead < queue.count {
            let next = queue[queueHead]
            queueHead += 1
            queuedBytes -= next.count
            if queueHead > 256 {
                queue.removeFirst(queueHead)
                queueHead = 0
            }
            condition.broadcast()
            let producer = queuedBytes < limit ? takeRoomWaiter() : nil
            condition.unlock()
            producer?.resume()
            return next
        }
        defer { condition.unlock() }
        switch outcome! {
        case .success: return nil
        case .failure(let error): throw error
        }
    }

    /// Whether the consumer stopped before the download ended (so a download error is a consequence, not a cause).
    package var stoppedBeforeEnd: Bool {
        condition.lock()
        defer { condition.unlock() }
        return stoppedEarly
    }

    /// Consumer: stop the download (the conversion failed or is over).
    package func cancel() {
        condition.lock()
        if outcome == nil { stoppedEarly = true }
        cancelled = true
        condition.broadcast()
        let producer = takeRoomWaiter()
        condition.unlock()
        producer?.resume(throwing: stopped)
    }
}
