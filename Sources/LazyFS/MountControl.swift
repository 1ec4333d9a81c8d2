import Blocking
import FUSE
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A background mount that failed to come up, with where its log is.
public struct MountFailure: Error, CustomStringConvertible {
    public var message: String
    public var log: String
    public var description: String { "\(message) (log: \(log))" }
}

/// Starting a mount in the background and ending one, as `slipway mount` and `slipway umount` do. A mount lives in
/// a process of its own (a session leader, so the shell that started it can go) that publishes its state in the
/// store; these functions talk to it through that state, its pid and the kernel's mount table.
public enum MountControl {
    /// Runs `command` (an invocation that serves the mount in the foreground and publishes its state at
    /// `statePath`) as a session leader with its output in the log beside the state, and returns the state once
    /// the mount reports itself live. Throws `MountFailure` when the mount reports an error or its process ends
    /// first, with the log's last lines. With `timeout`, a mount that is not live by then is stopped (SIGTERM) and
    /// reported as failed.
    public static func startInBackground(_ command: [String], statePath: String, timeout: Duration? = nil) async throws -> MountState {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        let logPath = logPath(forState: statePath)
        try? FileManager.default.removeItem(atPath: statePath)
        try FileManager.default.createDirectory(atPath: (statePath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: logPath, contents: nil)
        guard let log = FileHandle(forWritingAtPath: logPath) else { throw MountFailure(message: "cannot write the log", log: logPath) }
        defer { try? log.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setsid")
        process.arguments = command
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        try process.run()
        while true {
            if let state = MountState.read(statePath) {
                if let error = state.error { throw MountFailure(message: error, log: logPath) }
                if state.ready { return state }
            }
            if !process.isRunning {
                let tail = logTail(logPath)
                throw MountFailure(
                    message: tail.isEmpty ? "the mount process exited with status \(process.terminationStatus)" : tail, log: logPath)
            }
            if let deadline, let timeout, ContinuousClock.now >= deadline {
                process.terminate()
                // The caller may remove the log with the failed mount's state: what it said goes with the error.
                let tail = logTail(logPath)
                throw MountFailure(message: "the mount was not live within \(timeout)" + (tail.isEmpty ? "" : ": \(tail)"), log: logPath)
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// What `unmount` found.
    public struct Unmounted: Sendable {
        /// The last state the mount published, if any.
        public var finalState: MountState?
        /// The mount's process, when it had not ended by the timeout: a mount with files open in it is detached
        /// rather than unmounted, and its process serves those files (and keeps the store in use) until they
        /// are closed.
        public var stillServing: Int32?
    }

    /// Ends the mount at `mountpoint`: asks its process to unmount (SIGTERM, waiting up to `timeout` for it to
    /// end), then detaches whatever is left (the mount of a daemon that died, or of one that ignored the signal),
    /// and removes its state and log.
    public static func unmount(_ mountpoint: String, storeRoot: String, timeout: Duration = .seconds(10)) async throws -> Unmounted {
        let statePath = MountState.path(forMountpoint: mountpoint, storeRoot: storeRoot)
        var outcome = Unmounted(finalState: MountState.read(statePath))
        if let state = outcome.finalState, state.ownerAlive {
            kill(state.pid, SIGTERM)
            let deadline = ContinuousClock.now + timeout
            // The process itself is waited for, not its state file, which it rewrites while it runs.
            while state.ownerAlive, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            outcome.finalState = MountState.read(statePath) ?? state
            if state.ownerAlive { outcome.stillServing = state.pid }
        }
        try await runBlocking { try FUSEMount.forceUnmount(mountpoint) }
        try? FileManager.default.removeItem(atPath: statePath)
        try? FileManager.default.removeItem(atPath: logPath(forState: statePath))
        return outcome
    }

    /// The last lines of a mount's log, without the child's own "error: " prefix (the caller's would repeat it).
    private static func logTail(_ logPath: String) -> String {
        ((try? String(contentsOfFile: logPath, encoding: .utf8))?.split(separator: "\n").suffix(5) ?? [])
            .map { $0.hasPrefix("error: ") ? $0.dropFirst(7) : $0 }.joined(separator: "\n")
    }

    /// Where a background mount's output goes: beside its state.
    public static func logPath(forState statePath: String) -> String {
        statePath.replacingOccurrences(of: ".json", with: ".log")
    }
}
