import Blocking
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What a child process left when it ended.
public struct ProcessResult: Sendable {
    /// See `Termination.status`.
    public var status: Int32
    public var stdout: String
    public var stderr: String
    /// Both streams, standard output first: for messages, and for tools whose streams do not matter.
    public var output: String { stdout + stderr }
    /// When the process ended, taken by the thread that reaped it: a test's own clock after awaiting the result
    /// also counts the time its pool thread spent on other tests.
    public var ended: ContinuousClock.Instant
}

/// How a child process ended.
public enum Termination: Sendable, Equatable {
    case exit(Int32)
    case signal(Int32)

    /// The exit code, or 128 + the signal's number, as a shell reports it.
    public var status: Int32 {
        switch self {
        case .exit(let code): code
        case .signal(let number): 128 + number
        }
    }
}

public struct ChildProcessError: Error, CustomStringConvertible {
    public var command: String
    public var operation: String
    public var errno: Int32
    public var description: String { "\(operation) \(command): \(String(cString: strerror(errno)))" }
}

/// A child process whose end can be awaited without holding a thread of Swift's cooperative pool (one thread in
/// scripts/test, see scripts/with-one-pool-thread): every suite's tests share that pool, so a test waiting
/// synchronously for a long command stalls the others, and a test serving requests in-process starves its own
/// server.
///
/// Output goes to files rather than pipes, and the end is learnt from waitpid rather than from Foundation's
/// Process, whose exit detection waits for every holder of an inherited descriptor: a command that leaves a daemon
/// behind (squashfuse, a FUSE mount, munged) would otherwise never be seen to end.
public final class ChildProcess: Sendable {
    public let pid: pid_t
    public let command: String
    public let standardOutputPath: String
    public let standardErrorPath: String
    private let outputDirectory: String
    private let state = Mutex<State>(State())

    private struct State {
        var termination: Termination?
        var ended: ContinuousClock.Instant?
        var waiters: [CheckedContinuation<Termination, Never>] = []
    }

    /// Starts `executable` (a path, or a name looked up on PATH) with `arguments`. `environment` is added to this
    /// process's environment. Standard input is /dev/null unless `standardInput` names a file. Both output streams
    /// go to `log` when it is given (it is appended to), each to a private file otherwise.
    public init(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], directory: String? = nil,
        standardInput: String = "/dev/null", log: String? = nil
    ) throws {
        command = ([executable] + arguments).joined(separator: " ")
        var template = Array((NSTemporaryDirectory() + "/child-XXXXXX").utf8CString)
        guard let created = mkdtemp(&template) else {
            throw ChildProcessError(command: command, operation: "mkdtemp", errno: errno)
        }
        outputDirectory = String(cString: created)
        standardOutputPath = log ?? outputDirectory + "/stdout"
        standardErrorPath = log ?? outputDirectory + "/stderr"

        let merged = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        // glibc's posix_spawn_file_actions_addchdir_np is not visible to Swift; coreutils' env changes directory.
        let spawned = directory.map { ["env", "-C", $0, executable] + arguments } ?? [executable] + arguments
        let argv: [UnsafeMutablePointer<CChar>?] = spawned.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid = pid_t()
        // The test process blocks or ignores some signals (SIGPIPE): the child starts with the defaults, as
        // Slipway's own children do, and inherits no descriptor above 2.
        let rc = withSpawnDefaults { [standardOutputPath, standardErrorPath] attributes, actions in
            posix_spawn_file_actions_addopen(&actions, 0, standardInput, O_RDONLY, 0)
            if log != nil {
                posix_spawn_file_actions_addopen(&actions, 1, standardOutputPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
                posix_spawn_file_actions_adddup2(&actions, 1, 2)
            } else {
                posix_spawn_file_actions_addopen(&actions, 1, standardOutputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
                posix_spawn_file_actions_addopen(&actions, 2, standardErrorPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            }
            closeInheritedDescriptors(&actions)
            return posix_spawnp(&pid, spawned[0], &actions, &attributes, argv, envp)
        }
        guard rc == 0 else {
            try? FileManager.default.removeItem(atPath: outputDirectory)
            throw ChildProcessError(command: self.command, operation: "posix_spawn", errno: rc)
        }
        self.pid = pid
        Thread { [self] in reap() }.start()
    }

    deinit { try? FileManager.default.removeItem(atPath: outputDirectory) }

    private func reap() {
        var raw: Int32 = 0
        while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
        let termination: Termination = (raw & 0x7F) == 0 ? .exit((raw >> 8) & 0xFF) : .signal(raw & 0x7F)
        let ended = ContinuousClock.now
        let waiters = state.withLock { state in
            state.ended = ended
            state.termination = termination
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: termination) }
    }

    /// Waits for the process to end.
    public func termination() async -> Termination {
        await withCheckedContinuation { continuation in
            let ended: Termination? = state.withLock { state in
                if state.termination == nil { state.waiters.append(continuation) }
                return state.termination
            }
            if let ended { continuation.resume(returning: ended) }
        }
    }

    /// Waits for the process to end; returns its status (see `Termination.status`).
    @discardableResult
    public func exitStatus() async -> Int32 { await termination().status }

    /// The status if the process has ended, without waiting.
    public var endedStatus: Int32? { state.withLock { $0.termination?.status } }

    /// What the process has written to standard error so far.
    public var standardErrorSoFar: String { read(standardErrorPath) }

    /// Sends `signal` unless the process has ended (its pid may then be reused).
    public func signal(_ signal: Int32) { if endedStatus == nil { kill(pid, signal) } }

    /// Waits for the end, then returns the status and what the process wrote.
    public func result() async -> ProcessResult {
        let status = await exitStatus()
        let ended = state.withLock { $0.ended } ?? .now
        return ProcessResult(status: status, stdout: read(standardOutputPath), stderr: read(standardErrorPath), ended: ended)
    }

    private func read(_ path: String) -> String {
        (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    }
}

/// Runs a command to completion (see `ChildProcess`) and returns its status and output.
@discardableResult
public func run(
    _ executable: String, _ arguments: [String], environment: [String: String] = [:], directory: String? = nil
) async throws -> ProcessResult {
    try await ChildProcess(executable, arguments, environment: environment, directory: directory).result()
}

/// Detaches the mount at `path` (umount -l) without running a command, for `defer` blocks, which cannot await.
/// Nothing happens when nothing is mounted there.
public func detachMount(_ path: String) {
    _ = umount2(path, Int32(MNT_DETACH))
}

public struct CommandFailed: Error, CustomStringConvertible {
    public var command: String
    public var result: ProcessResult
    public var description: String { "\(command) exited \(result.status): \(result.stderr)" }
}

/// Runs a command that must succeed: a non-zero status throws, naming the command and what it wrote on stderr.
@discardableResult
public func runChecked(
    _ executable: String, _ arguments: [String], environment: [String: String] = [:], directory: String? = nil
) async throws -> ProcessResult {
    let result = try await run(executable, arguments, environment: environment, directory: directory)
    guard result.status == 0 else {
        throw CommandFailed(command: ([executable] + arguments).joined(separator: " "), result: result)
    }
    return result
}
