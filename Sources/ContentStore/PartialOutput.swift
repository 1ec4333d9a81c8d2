#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Foundation
import Synchronization

/// Paths that hold output under construction (an unpack's staging tree, a layer being extracted into the cache,
/// a converted blob being written), removed if the process is told to stop before they are complete.
///
/// Every writer already removes its partial output when it fails; a SIGINT or SIGTERM ends the process without
/// unwinding, so the CLI installs `removeOnTerminationSignals()` for the commands that write and the writers
/// register what they are building for as long as they build it.
public enum PartialOutput {
    private static let paths = Mutex<[UInt64: String]>([:])
    private static let nextToken = Atomic<UInt64>(0)
    /// The signal sources must live as long as the process; only `removeOnTerminationSignals` touches them, once,
    /// while the CLI starts.
    nonisolated(unsafe) private static var signalSources: [any DispatchSourceSignal] = []

    /// Keeps `path` registered until the returned registration is ended.
    public static func register(_ path: String) -> Registration {
        let token = nextToken.wrappingAdd(1, ordering: .relaxed).newValue
        paths.withLock { $0[token] = path }
        return Registration(token: token)
    }

    public struct Registration: Sendable {
        fileprivate let token: UInt64

        /// The output is complete (or was removed by its writer): a later signal leaves it alone.
        public func end() {
            _ = PartialOutput.paths.withLock { $0.removeValue(forKey: token) }
        }
    }

    /// SIGINT and SIGTERM remove every registered path, then end the process with status 128 + the signal number
    /// (as the default action would report it to a shell). For commands that do not handle these signals
    /// themselves (`mount` and `serve` stop gracefully, `run` forwards them to the container).
    public static func removeOnTerminationSignals() {
        let queue = DispatchQueue(label: "slipway-termination")
        let sources = [SIGINT, SIGTERM].map { number -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler {
                removeAll()
                let name = number == SIGINT ? "SIGINT" : "SIGTERM"
                FileHandle.standardError.write(Data("slipway: stopped by \(name); partial output removed\n".utf8))
                // Not exit(): the other threads are still running and must not see static destructors run.
                _exit(128 + number)
            }
            source.resume()
            return source
        }
        signalSources += sources
    }

    /// Removes every registered path. The writer threads keep going meanwhile, so a directory can gain an entry
    /// between its listing and its removal; removing again until it is gone wins, because creating inside a
    /// removed directory fails.
    static func removeAll() {
        for path in paths.withLock({ Array($0.values) }) {
            for _ in 0..<100 {
                var info = stat()
                guard lstat(path, &info) == 0 else { break }
                try? FileManager.default.removeItem(atPath: path)
            }
        }
    }
}
