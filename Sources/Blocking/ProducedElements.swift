import Foundation

/// Elements a blocking function produces on a thread of its own, at most `capacity` ahead of the consumer: how an
/// async consumer (a request body) reads a file without reading on the cooperative pool, and without a thread hop
/// per element. Each iteration starts its own producer; dropping the iterator stops it.
package struct ProducedElements<Element: Sendable>: AsyncSequence, Sendable {
    /// Hands one element to the consumer, blocking while `capacity` elements wait; throws once the consumer is gone.
    package typealias Yield = (Element) throws -> Void

    let capacity: Int
    let produce: @Sendable (_ yield: Yield) throws -> Void

    /// `produce` runs on a thread of its own and yields the elements in order; returning ends the sequence, and
    /// throwing ends it with that error.
    package init(capacity: Int = 2, produce: @escaping @Sendable (_ yield: Yield) throws -> Void) {
        self.capacity = Swift.max(1, capacity)
        self.produce = produce
    }

    package func makeAsyncIterator() -> Iterator {
        let channel = Channel(capacity: capacity)
        startThread { [produce] in
            do {
                try produce(channel.yield)
                channel.finish(nil)
            } catch {
                channel.finish(error)
            }
        }
        return Iterator(consumer: Consumer(channel))
    }

    package struct Iterator: AsyncIteratorProtocol {
        let consumer: Consumer

        package mutating func next() async throws -> Element? { try await consumer.next() }
    }

    /// The iterator's end of the channel: when the iterator goes, the producer is told to stop.
    final class Consumer: Sendable {
        let channel: Channel
        init(_ channel: Channel) { self.channel = channel }
        deinit { channel.cancel() }

        func next() async throws -> Element? {
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { channel.take(into: $0) }
            } onCancel: {
                channel.cancel()
            }
        }
    }

    final class Channel: @unchecked Sendable {
        // All state is guarded by `condition`.
        private let condition = NSCondition()
        private let capacity: Int
        private var buffer: [Element] = []
        private var waiting: CheckedContinuation<Element?, any Error>?
        private var ended = false
        private var failure: (any Error)?
        private var cancelled = false

        init(capacity: Int) { self.capacity = capacity }

        func yield(_ element: Element) throws {
            condition.lock()
            while buffer.count >= capacity && !cancelled { condition.wait() }
            if cancelled {
                condition.unlock()
                throw CancellationError()
            }
            if let consumer = waiting {
                waiting = nil
                condition.unlock()
                consumer.resume(returning: element)
                return
            }
            buffer.append(element)
            condition.unlock()
        }

        func finish(_ error: (any Error)?) {
            condition.lock()
            ended = true
            failure = error
            let consumer = waiting
            waiting = nil
            condition.unlock()
            if let consumer { Self.end(consumer, error) }
        }

        func take(into consumer: CheckedContinuation<Element?, any Error>) {
            condition.lock()
            if !buffer.isEmpty {
                let element = buffer.removeFirst()
                condition.signal()
                condition.unlock()
                consumer.resume(returning: element)
            } else if ended || cancelled {
                let error = cancelled ? CancellationError() : failure
                condition.unlock()
                Self.end(consumer, error)
            } else {
                waiting = consumer
                condition.unlock()
            }
        }

        func cancel() {
            condition.lock()
            cancelled = true
            condition.broadcast()
            let consumer = waiting
            waiting = nil
            condition.unlock()
            consumer?.resume(throwing: CancellationError())
        }

        private static func end(_ consumer: CheckedContinuation<Element?, any Error>, _ error: (any Error)?) {
            if let error { consumer.resume(throwing: error) } else { consumer.resume(returning: nil) }
        }
    }
}
