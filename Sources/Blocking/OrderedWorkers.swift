import Foundation

/// CPU-bound work done on threads of its own (each with its own `State`, e.g. a compressor), handed back in
/// submission order: a format writer uses every core while its bytes stay what one thread would write. At most
/// `2 × workers + 1` items are outstanding, which bounds the memory a writer holds. The submitting thread blocks
/// while the queue is full, so it must not be a thread of Swift's cooperative pool.
package final class OrderedWorkers<State, Output>: @unchecked Sendable {
    private final class Item: @unchecked Sendable {
        let work: (State) -> Output
        var output: Output?

        init(work: @escaping (State) -> Output) { self.work = work }
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

    /// Starts `workers` threads named `name`, each with a state `makeState` makes here, so that a state that
    /// cannot be made fails the call rather than a thread. Call `stop()` when done: the threads run until then.
    package init<E: Error>(workers: Int, name: String, makeState: () throws(E) -> State) throws(E) {
        maxPending = max(1, workers) * 2 + 1
        let states = try (0..<max(1, workers)).map { _ throws(E) in try makeState() }
        for state in states { start(state, name: name) }
    }

    private func start(_ state: State, name: String) {
        running += 1
        let box = StateBox(state)
        let thread = Thread { [self] in
            while let item = next() {
                let output = item.work(box.state)
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
        thread.name = name
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
    package func submit<E: Error>(_ work: @escaping (State) -> Output, emit: (Output) throws(E) -> Void) throws(E) {
        let item = Item(work: work)
        condition.lock()
        queue.append(item)
        condition.signal()
        condition.unlock()
        pending.append(item)
        try drain(whileAbove: maxPending, emit: emit)
    }

    /// Queues an output that needs no work behind what is already queued, without waking a thread.
    package func submit<E: Error>(ready output: Output, emit: (Output) throws(E) -> Void) throws(E) {
        let item = Item(work: { _ in output })
        item.output = output
        pending.append(item)
        try drain(whileAbove: maxPending, emit: emit)
    }

    /// Waits for everything submitted and emits it.
    package func finish<E: Error>(emit: (Output) throws(E) -> Void) throws(E) {
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

    /// Drops what is still queued and waits for the threads to end (each finishes the item it is on).
    package func stop() {
        condition.lock()
        stopping = true
        queue.removeAll()
        queueHead = 0
        condition.broadcast()
        while running > 0 { condition.wait() }
        condition.unlock()
    }
}

/// Hands a worker's state to its thread: it is only ever touched there.
private final class StateBox<State>: @unchecked Sendable {
    let state: State
    init(_ state: State) { self.state = state }
}
