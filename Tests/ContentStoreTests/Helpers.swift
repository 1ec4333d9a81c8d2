import ContentStore
import Foundation
import OCI
import Synchronization
import Testing
import TestSupport

/// Something that happens once, which tasks can wait for and synchronous callbacks can report.
final class Event: Sendable {
    private struct State {
        var happened = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    func signal() {
        let waiters = state.withLock { state in
            state.happened = true
            defer { state.waiters = [] }
            return state.waiters
        }
        waiters.forEach { $0.resume() }
    }

    func wait() async {
        await withCheckedContinuation { continuation in
            let happened = state.withLock { state in
                if !state.happened { state.waiters.append(continuation) }
                return state.happened
            }
            if happened { continuation.resume() }
        }
    }
}

/// Runs blocking work on a thread of its own, so a test can run two of them at once without holding threads of
/// the cooperative pool (one thread under LIBDISPATCH_COOPERATIVE_POOL_STRICT=1).
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

func descriptor(of bytes: [UInt8], mediaType: String = MediaType.ociLayer) -> Descriptor {
    Descriptor(mediaType: mediaType, digest: .sha256(of: bytes), size: Int64(bytes.count))
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

func write(_ fill: [UInt8], into sink: FileBlobSink) throws {
    try fill.withUnsafeBytes { try sink.append($0) }
}

/// The names in `directory`, sorted; empty when it does not exist.
func listing(_ directory: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
}

func mode(of path: String) -> mode_t {
    var info = stat()
    guard stat(path, &info) == 0 else { return 0 }
    return info.st_mode & 0o7777
}

struct Interrupted: Error {}

/// An ingest of `blob` whose transfer stops after the first `count` bytes of `content`, as a killed download does.
func interruptIngest(_ store: ContentStore, _ blob: Descriptor, after count: Int, of content: [UInt8]) async {
    await #expect(throws: Interrupted.self) {
        try await store.ingest(blob) { sink in
            try write(Array(content.prefix(count)), into: sink)
            throw Interrupted()
        }
    }
}
