#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// A command run to its end without holding a thread of Swift's cooperative pool: it is started with posix_spawn,
/// its output goes to unlinked files (so neither stream can fill a pipe and stall the command, and nothing has to
/// drain them meanwhile), and one thread of its own feeds its input and waits for its exit.
///
/// The command inherits this process's environment, starts with every signal's default disposition and an empty
/// mask (Slipway ignores SIGPIPE, which a child would otherwise inherit), and no descriptor above 2 (an in-process
/// FUSE mount's /dev/fuse must not outlive us in a helper). Cancelling the awaiting task kills the command.
package struct ChildCommand: Sendable {
    package enum Input: Sendable {
        /// /dev/null.
        case none
        /// These bytes, then the end of the stream. A command that exits without reading them is not an error.
        case bytes([UInt8])
        /// Whatever `write` writes into the descriptor it is given, a pipe to the command. It runs on the waiting
        /// thread, so it may block while the command is busy; the pipe closes when it returns or throws (see
        /// `ChildCommandResult.inputFailure`). SIGPIPE is blocked meanwhile: a command that stops reading shows as
        /// EPIPE.
        case stream(_ write: @Sendable (_ descriptor: Int32) throws -> Void)
    }

    /// A path, or a name looked up on PATH.
    package var executable: String
    package var arguments: [String]
    package var standardInput: Input

    package init(_ executable: String, _ arguments: [String], standardInput: Input = .none) {
        self.executable = executable
        self.arguments = arguments
        self.standardInput = standardInput
    }

    var commandLine: String { ([executable] + arguments).joined(separator: " ") }

    /// Starts the command, waits for its end and returns what it wrote.
    package func run() async throws(ChildCommandError) -> ChildCommandResult {
        let output = try temporaryFile()
        defer { close(output) }
        let errors = try temporaryFile()
        defer { close(errors) }
        var inputPipe: [Int32] = [-1, -1]
        if case .none = standardInput {} else {
            // pipe2 is not visible to Swift; our own children close every descriptor above 2 anyway.
            guard pipe(&inputPipe) == 0 else { throw ChildCommandError(command: commandLine, operation: "pipe", errno: errno) }
            for end in inputPipe { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        }
        let spawned = Result { () throws(ChildCommandError) in try spawn(input: inputPipe[0], output: output, errors: errors) }
        if inputPipe[0] >= 0 { close(inputPipe[0]) }
        if case .failure = spawned, inputPipe[1] >= 0 { close(inputPipe[1]) }
        let process = try spawned.get()
        let (feed, input, commandLine) = (inputPipe[1], standardInput, commandLine)
        let ended = await withTaskCancellationHandler {
            await runBlocking { () -> Result<ChildCommandResult, ChildCommandError> in
                let inputFailure = feed >= 0 ? Self.send(input, into: feed) : nil
                let status = process.waitForExit()
                return Result { () throws(ChildCommandError) in
                    ChildCommandResult(
                        status: status, standardOutput: try Self.readAll(output, of: commandLine),
                        standardError: try Self.readAll(errors, of: commandLine), inputFailure: inputFailure)
                }
            }
        } onCancel: {
            process.kill()
        }
        return try ended.get()
    }

    private func spawn(input: Int32, output: Int32, errors: Int32) throws(ChildCommandError) -> SpawnedProcess {
        let spawned: Result<pid_t, ChildCommandError> = withSpawnDefaults { attributes, actions in
            if input >= 0 {
                posix_spawn_file_actions_adddup2(&actions, input, 0)
            } else {
                posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            }
            posix_spawn_file_actions_adddup2(&actions, output, 1)
            posix_spawn_file_actions_adddup2(&actions, errors, 2)
            closeInheritedDescriptors(&actions)
            let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
            defer { argv.forEach { free($0) } }
            var pid: pid_t = 0
            let rc = posix_spawnp(&pid, executable, &actions, &attributes, argv, environ)
            guard rc == 0 else { return .failure(ChildCommandError(command: commandLine, operation: "posix_spawn", errno: rc)) }
            return .success(pid)
        }
        return SpawnedProcess(pid: try spawned.get())
    }

    private static func send(_ input: Input, into descriptor: Int32) -> (any Error)? {
        var pipeSignal = sigset_t()
        sigemptyset(&pipeSignal)
        sigaddset(&pipeSignal, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &pipeSignal, nil)
        var failure: (any Error)?
        switch input {
        case .none: break
        case .bytes(let bytes):
            bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let written = write(descriptor, raw.baseAddress! + offset, raw.count - offset)
                    if written < 0 {
                        if errno == EINTR { continue }
                        break
                    }
                    offset += written
                }
            }
        case .stream(let write):
            do { try write(descriptor) } catch { failure = error }
        }
        close(descriptor)
        // A SIGPIPE our writes raised is pending on this thread; it must not reach the process once the thread ends.
        var now = timespec()
        while sigtimedwait(&pipeSignal, nil, &now) == SIGPIPE {}
        return failure
    }

    private func temporaryFile() throws(ChildCommandError) -> Int32 {
        var template = Array((NSTemporaryDirectory() + "/slipway-output-XXXXXX").utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw ChildCommandError(command: commandLine, operation: "mkstemp", errno: errno) }
        unlink(String(cString: template))
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return fd
    }

    private static func readAll(_ fd: Int32, of commandLine: String) throws(ChildCommandError) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        var offset: off_t = 0
        while true {
            let got = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            if got < 0 {
                if errno == EINTR { continue }
                throw ChildCommandError(command: commandLine, operation: "read output", errno: errno)
            }
            if got == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<got])
            offset += off_t(got)
        }
    }
}

/// How a command ended and what it wrote.
package struct ChildCommandResult: Sendable {
    /// The exit code, or 128 + the signal's number when a signal ended the command, as a shell reports it.
    package var status: Int32
    package var standardOutput: [UInt8]
    package var standardError: [UInt8]
    /// Why a `.stream` input stopped early, if it did. A command that failed usually explains it better (a write
    /// into a command that exited fails with EPIPE).
    package var inputFailure: (any Error)?

    package var standardOutputText: String { String(decoding: standardOutput, as: UTF8.self) }
    package var standardErrorText: String { String(decoding: standardError, as: UTF8.self) }
}

package struct ChildCommandError: Error, CustomStringConvertible {
    package var command: String
    package var operation: String
    package var errno: Int32
    package var description: String { "\(operation) for \(command): \(String(cString: strerror(errno)))" }
}

/// A started child and whether it has ended: a pid is only signalled while it is still ours (an ended child's pid
/// may belong to another process once reaped).
private final class SpawnedProcess: Sendable {
    let pid: pid_t
    private let ended = Mutex(false)

    init(pid: pid_t) { self.pid = pid }

    /// Blocks until the child ends; returns its status (see `ChildCommandResult.status`).
    func waitForExit() -> Int32 {
        // Waits without reaping first, so that `kill` can never hit a reused pid.
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR {}
        ended.withLock { $0 = true }
        var raw: Int32 = 0
        while waitpid(pid, &raw, 0) < 0 {
            if errno != EINTR { return 255 }
        }
        let signal = raw & 0x7f
        return signal == 0 ? (raw >> 8) & 0xff : 128 + signal
    }

    func kill() {
        ended.withLock { ended in
            if !ended { _ = Glibc.kill(pid, SIGKILL) }
        }
    }
}
