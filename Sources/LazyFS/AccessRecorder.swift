import Foundation
import Synchronization

/// The files a workload opens, in first-access order: the list `slipway convert --prioritize` takes, so a first
/// run through a lazy mount can optimize the image for the next.
public final class AccessRecorder: Sendable {
    private struct State {
        var seen: Set<String> = []
        var order: [String] = []
    }
    private let state = Mutex(State())

    public init() {}

    public func opened(_ path: String) {
        state.withLock { s in
            if s.seen.insert(path).inserted { s.order.append(path) }
        }
    }

    public var paths: [String] { state.withLock { $0.order } }

    /// One path per line.
    public func write(to file: String) throws {
        let text = paths.map { $0 + "\n" }.joined()
        try Data(text.utf8).write(to: URL(fileURLWithPath: file), options: .atomic)
    }
}
