import Blocking
import Foundation
import Testing

@Suite struct ProducedElementsTests {
    @Test func elementsArriveInOrderAndTheProducersErrorEndsTheSequence() async throws {
        struct Broken: Error {}
        let elements = ProducedElements<Int>(capacity: 2) { yield in
            for number in 0..<100 { try yield(number) }
            throw Broken()
        }
        var seen: [Int] = []
        await #expect(throws: Broken.self) {
            for try await number in elements { seen.append(number) }
        }
        #expect(seen == Array(0..<100))
    }

    /// A consumer that stops early (a failed upload) must not leave the producer blocked on a full buffer.
    @Test func droppingTheIteratorStopsTheProducer() async throws {
        let stopped = AsyncStream.makeStream(of: (any Error).self)
        let elements = ProducedElements<Int>(capacity: 1) { yield in
            do {
                for number in 0... { try yield(number) }
            } catch {
                stopped.continuation.yield(error)
                throw error
            }
        }
        do {
            var iterator = elements.makeAsyncIterator()
            #expect(try await iterator.next() == 0)
        }
        var reasons = stopped.stream.makeAsyncIterator()
        #expect(await reasons.next() is CancellationError)
    }
}
