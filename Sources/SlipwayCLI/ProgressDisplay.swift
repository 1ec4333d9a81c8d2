import Foundation
import Images
import OCI
import Slipway
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Progress on stderr: live bars (bytes, rate, ETA per layer) on a terminal, one line per event otherwise.
final class ProgressDisplay: Sendable {
    private struct Bar {
        var label: String
        var total: Int64
        var current: Int64 = 0
        var started = ContinuousClock.now
        var ended: ContinuousClock.Instant?
        var state = "fetching"
    }
    private struct State {
        var bars: [(Digest, Bar)] = []
        var drawnLines = 0
        var lastDraw = ContinuousClock.now - .seconds(1)
    }

    let enabled: Bool
    let isTerminal: Bool
    private let state = Mutex(State())

    init(enabled: Bool) {
        self.enabled = enabled
        self.isTerminal = isatty(STDERR_FILENO) == 1
    }

    var handler: ProgressHandler { { [self] event in handle(event) } }

    func handle(_ event: ProgressEvent) {
        guard enabled else { return }
        if !isTerminal {
            if let line = plainLine(for: event) { FileHandle.standardError.write(Data((line + "\n").utf8)) }
            return
        }
        state.withLock { state in
            switch event {
            case .blobStarted(let descriptor, let label):
                state.bars.append((descriptor.digest, Bar(label: "\(label) \(descriptor.digest.short)", total: descriptor.size)))
            case .blobProgress(let digest, let bytes):
                update(&state, digest) { $0.current = bytes }
            case .blobWaiting(let digest):
                update(&state, digest) { $0.state = "waiting for another process" }
            case .blobFinished(let digest, _, let skipped):
                update(&state, digest) {
                    $0.current = $0.total
                    $0.ended = .now
                    $0.state = skipped ? "already present" : "verified"
                }
            case .layerStarted(let index, let count, let descriptor, let work):
                update(&state, descriptor.digest) { $0.state = "\(work.doing) \(index + 1)/\(count)" }
            case .layerFinished(_, let descriptor, let work, let seconds):
                update(&state, descriptor.digest) { $0.state = String(format: "\(work.done) in %.2f s", seconds) }
            case .message(let text):
                FileHandle.standardError.write(Data((text + "\n").utf8))
                return
            }
            let now = ContinuousClock.now
            let finished = state.bars.allSatisfy { $0.1.current >= $0.1.total }
            guard now - state.lastDraw > .milliseconds(100) || finished else { return }
            state.lastDraw = now
            draw(&state)
        }
    }

    /// Leaves the final state of the bars on screen.
    func finish() {
        guard enabled, isTerminal else { return }
        state.withLock { draw(&$0) }
    }

    private func update(_ state: inout State, _ digest: Digest, _ change: (inout Bar) -> Void) {
        if let index = state.bars.firstIndex(where: { $0.0 == digest }) { change(&state.bars[index].1) }
    }

    private func draw(_ state: inout State) {
        var output = state.drawnLines > 0 ? "\u{1B}[\(state.drawnLines)A" : ""
        for (_, bar) in state.bars {
            let fraction = bar.total > 0 ? min(1, Double(bar.current) / Double(bar.total)) : 1
            let width = 24
            let filled = Int(fraction * Double(width))
            let seconds = max(0.001, ((bar.ended ?? .now) - bar.started).seconds)
            let rate = Double(bar.current) / seconds
            let eta = rate > 0 && bar.current < bar.total ? String(format: " ETA %.0fs", Double(bar.total - bar.current) / rate) : ""
            output += "\u{1B}[2K\(bar.label) [\(String(repeating: "=", count: filled))\(String(repeating: " ", count: width - filled))] "
            output += "\(formatBytes(bar.current))/\(formatBytes(bar.total)) \(formatBytes(Int64(rate)))/s\(eta) \(bar.state)\n"
        }
        state.drawnLines = state.bars.count
        FileHandle.standardError.write(Data(output.utf8))
    }

    private func plainLine(for event: ProgressEvent) -> String? {
        switch event {
        case .blobStarted: return nil
        case .blobWaiting(let digest): return "blob \(digest.short): waiting for another process fetching it"
        case .blobFinished(let digest, let transferred, let skipped):
            return "blob \(digest.short): " + (skipped ? "already present" : "\(formatBytes(transferred)) transferred and verified")
        case .layerStarted(let index, let count, let descriptor, let work):
            return "layer \(index + 1)/\(count) \(descriptor.digest.short): \(work.doing)"
        case .layerFinished(let index, _, let work, let seconds):
            return String(format: "layer %d: \(work.done) in %.2f s", index + 1, seconds)
        case .message(let text): return text
        case .blobProgress: return nil
        }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
