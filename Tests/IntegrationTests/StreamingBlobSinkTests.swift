@testable import Archive
import Blocking
import Foundation
import OCI
@testable import Images
import Synchronization
import Testing
import TestSupport

@Suite struct StreamingBlobSinkTests {
    /// The download waits for a decoder `limit` bytes behind it suspended, in `waitForRoom`: the download and this
    /// test's task, which lets the decoder start, share one thread, so a download that blocked it would keep the
    /// decoder from ever starting (the decoder gives up after a minute, and the test fails).
    @Test func aDownloadWaitsForASlowDecoderWithoutHoldingAThread() async throws {
        try await withTaskExecutorPreference(OneThreadExecutor.shared) { try await downloadAheadOfASlowDecoder() }
    }

    private func downloadAheadOfASlowDecoder() async throws {
        let chunks = (0..<6).map { [UInt8](repeating: UInt8($0), count: 4) }
        let blob = chunks.flatMap { $0 }
        let sink = StreamingBlobSink(
            Descriptor(mediaType: "application/octet-stream", digest: .sha256(of: blob), size: Int64(blob.count)), limit: 8)
        let appended = Counter()
        let download = Task(executorPreference: OneThreadExecutor.shared) {
            for chunk in chunks {
                try await sink.waitForRoom()
                try chunk.withUnsafeBytes { try sink.append($0) }
                appended.increment()
            }
            sink.finish(error: nil)
        }
        let decoderMayStart = DispatchSemaphore(value: 0)
        let decoding = Task {
            try await runBlocking {
                guard decoderMayStart.wait(timeout: .now() + 60) == .success else {
                    sink.cancel()
                    return ([UInt8](), [Int]())
                }
                var read: [UInt8] = []
                var aheadOfDecoder: [Int] = []
                while let chunk = try sink.chunks.next() {
                    read += chunk
                    aheadOfDecoder.append(appended.value * 4 - read.count)
                }
                return (read, aheadOfDecoder)
            }
        }
        // Two chunks fill the queue; the download then waits for room.
        while appended.value < 2 { try await Task.sleep(for: .milliseconds(5)) }
        decoderMayStart.signal()
        let (read, ahead) = try await decoding.value
        try await download.value
        #expect(read == blob)
        #expect(!ahead.isEmpty && ahead.allSatisfy { $0 <= 8 }, "\(ahead)")
    }

    /// A decoder that stops (a bad layer) releases a download waiting for room, with an error.
    @Test func aStoppedDecoderReleasesTheWaitingDownload() async throws {
        let blob = [UInt8](repeating: 7, count: 16)
        let sink = StreamingBlobSink(
            Descriptor(mediaType: "application/octet-stream", digest: .sha256(of: blob), size: Int64(blob.count)), limit: 8)
        try await sink.waitForRoom()
        try blob[0..<8].withUnsafeBytes { try sink.append($0) }
        let waiting = Task { try await sink.waitForRoom() }
        sink.cancel()
        await #expect(throws: BlobSinkError.self) { try await waiting.value }
        #expect(sink.stoppedBeforeEnd)
    }
}

private final class Counter: Sendable {
    private let count = Atomic<Int>(0)
    var value: Int { count.load(ordering: .sequentiallyConsistent) }
    func increment() { count.add(1, ordering: .sequentiallyConsistent) }
}
