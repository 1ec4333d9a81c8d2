import Foundation

/// Work done on compression threads (each with its own libdeflate compressor) and handed back in submission
/// order, so a squashfs is compressed on every core while its bytes stay what one thread would write.
/// At most `2 × workers + 1` items are outstanding, which bounds the memory one conversion holds. The threads
/// run until `stop()`, which the owner must call.
final class OrderedCompression<Output>: @unchecked Sendable {
    private final class Item: @unchecked Sendable {
        let work: (ZlibBlockCompressor) -> Output
        var output: Output?

        init(work: @escaping (ZlibBlockCompressor) -> Output) { self.work = work }
    }

    // `queue`, `stopping`, `running` and every item's `output` are guarded by `condition`; `pending` belongs to the
    // submitting thread.
    private let condition = NSCondition()
    private var queue: [Item] = []
    private var queueHead = 0
    private var stopping = false
    private var running = 0
    private var pending: [Item] = []
    private var pendingHead = 0
    private let maxPending: Int

    init(workers: Int, level: Int) throws(SquashfsError) {
        maxPending = workers * 2 + 1
        // Compressors are made here so that a bad level fails the call rather than a thread.
        for _ in 0..<max(1, workers) { start(try ZlibBlockCompressor(level: level)) }
    }

    private func start(_ compressor: ZlibBlockCompressor) {
        running += 1
        let thread = Thread { [self] in
            while let item = next() {
                let output = item.work(compressor)
                condition.lock()
                item.output = output
                condition.broadcast()
                condition.unlock()
            }
            condition.lock()
            running -= 1
            condition.broadcast()
            condition.unlock()
        }
        thread.name = "squashfs-deflate"
        thread.start()
    }

    private func next() -> Item? {
        condition.lock()
        defer { condition.unlock() }
        while queueHead == queue.count && !stopping { condition.wait() }
        guard queueHead < queue.count else { return nil }
        let item = queue[queueHead]
        queueHead += 1
        if queueHead > 1024 {
            queue.removeFirst(queueHead)
            queueHead = 0
        }
        return item
    }

    /// Queues `work`; hands every finished output, in submission order, to `emit`, waiting while too many are
    /// outstanding.
    func submit<E: Error>(_ work: @escaping (ZlibBlockCompressor) -> Output, emit: (Output) throws(E) -> Void) throws(E) {
        let item = Item(work: work)
        condition.lock()
        queue.append(item)
        condition.signal()
        condition.unlock()
        pending.append(item)
        try drain(whileAbove: maxPending, emit: emit)
    }

    /// Queues an output that needs no work (blocks copied from an earlier image) behind what is already queued,
    /// without waking a thread.
    func submit<E: Error>(ready output: Output, emit: (Output) throws(E) -> Void) throws(E) {
        let item = Item(work: { _ in output })
        item.output = output
        pending.append(item)
        try drain(whileAbove: maxPending, emit: emit)
    }

    /// Waits for everything submitted and emits it.
    func finish<E: Error>(emit: (Output) throws(E) -> Void) throws(E) {
        try drain(whileAbove: 0, emit: emit)
    }

    private func drain<E: Error>(whileAbove limit: Int, emit: (Output) throws(E) -> Void) throws(E) {
        while pendingHead < pending.count {
            let head = pending[pendingHead]
            condition.lock()
            while head.output == nil && pending.count - pendingHead > limit { condition.wait() }
            let output = head.output
            condition.unlock()
            guard let output else { return }
            pendingHead += 1
            if pendingHead > 1024 {
                pending.removeFirst(pendingHead)
                pendingHead = 0
            }
            try emit(output)
        }
    }

    /// Lets the threads end once the queue is empty; an abandoned queue is dropped.
    func stop() {
        condition.lock()
        stopping = true
        queue.removeAll()
        queueHead = 0
        condition.broadcast()
        condition.unlock()
    }
}
