import Foundation

/// A fixed-capacity buffer of decompressed bytes passed between threads.
final class DecodedChunk: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let capacity: Int
    var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        base = .allocate(byteCount: capacity, alignment: 64)
    }

    deinit { base.deallocate() }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
}

/// Bounded single-producer/single-consumer queue of `DecodedChunk`s with a free list, so the
/// producer blocks (backpressure) when the consumer falls behind. Memory use is fixed.
/// All state is guarded by `condition`.
final class ChunkPipe: @unchecked Sendable {
    private let condition = NSCondition()
    private var free: [DecodedChunk]
    private var filled: [DecodedChunk] = []
    private var producerFinished = false
    private var producerError: Error?
    private var cancelled = false
    private var producerExited = false

    init(chunkSize: Int = 1 << 20, chunkCount: Int = 6) {
        free = (0..<chunkCount).map { _ in DecodedChunk(capacity: chunkSize) }
    }

    /// Producer: waits for an empty chunk; nil when the consumer cancelled.
    func takeFree() -> DecodedChunk? {
        condition.lock()
        defer { condition.unlock() }
        while free.isEmpty && !cancelled { condition.wait() }
        if cancelled { return nil }
        let chunk = free.removeLast()
        chunk.count = 0
        return chunk
    }

    /// Producer: hands a filled chunk to the consumer.
    func push(_ chunk: DecodedChunk) {
        condition.lock()
        filled.append(chunk)
        condition.signal()
        condition.unlock()
    }

    /// Producer: no more chunks (error = failure reason).
    func finish(error: Error?) {
        condition.lock()
        producerFinished = true
        producerError = error
        condition.broadcast()
        condition.unlock()
    }

    /// Producer thread: last call before the thread ends.
    func markExited() {
        condition.lock()
        producerExited = true
        condition.broadcast()
        condition.unlock()
    }

    /// Consumer: next filled chunk, nil at the end of the stream; rethrows the producer's error.
    func pop() throws -> DecodedChunk? {
        condition.lock()
        defer { condition.unlock() }
        while filled.isEmpty && !producerFinished { condition.wait() }
        if !filled.isEmpty { return filled.removeFirst() }
        if let producerError { throw producerError }
        return nil
    }

    /// Consumer: returns a chunk to the free list.
    func recycle(_ chunk: DecodedChunk) {
        condition.lock()
        free.append(chunk)
        condition.signal()
        condition.unlock()
    }

    /// Consumer: stop the producer (after a consumer-side error).
    func cancel() {
        condition.lock()
        cancelled = true
        condition.broadcast()
        condition.unlock()
    }

    /// The producer's error, if it finished with one.
    var failure: Error? {
        condition.lock()
        defer { condition.unlock() }
        return producerError
    }

    func waitForProducerExit() {
        condition.lock()
        while !producerExited { condition.wait() }
        condition.unlock()
    }
}

/// `TarByteSource` reading decoded chunks from a pipe, recycling each once the next is requested.
struct PipeByteSource: TarByteSource {
    let pipe: ChunkPipe
    private var held: DecodedChunk?

    init(_ pipe: ChunkPipe) { self.pipe = pipe }

    mutating func nextBytes() throws -> UnsafeRawBufferPointer? {
        if let held {
            pipe.recycle(held)
            self.held = nil
        }
        guard let chunk = try pipe.pop() else { return nil }
        held = chunk
        return chunk.bytes
    }
}
