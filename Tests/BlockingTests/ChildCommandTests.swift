import Blocking
import Foundation
import Testing
import TestSupport

/// The child-process runner: input, output and status, and that waiting for a command leaves the cooperative pool
/// to other tasks.
@Suite struct ChildCommandTests {
    @Test func standardInputReachesTheCommandAndBothStreamsComeBack() async throws {
        let result = try await ChildCommand(
            "/bin/sh", ["-c", "tr a-z A-Z; echo to-stderr >&2; exit 3"], standardInput: .bytes(Array("server.example\n".utf8))
        ).run()
        #expect(result.status == 3)
        #expect(result.standardOutputText == "SERVER.EXAMPLE\n")
        #expect(result.standardErrorText == "to-stderr\n")
    }

    @Test func aSignalShowsAsTheShellReportsIt() async throws {
        let result = try await ChildCommand("/bin/sh", ["-c", "kill -TERM $$"]).run()
        #expect(result.status == 128 + SIGTERM)
    }

    @Test func aCommandThatIgnoresItsInputIsNotAnError() async throws {
        let input = [UInt8](repeating: 0x61, count: 1 << 20)
        let result = try await ChildCommand("/bin/true", [], standardInput: .bytes(input)).run()
        #expect(result.status == 0)
    }

    @Test func aStreamedInputAndItsFailureAreReported() async throws {
        struct Stopped: Error {}
        let result = try await ChildCommand("/usr/bin/wc", ["-c"], standardInput: .stream { descriptor in
            let bytes = [UInt8](repeating: 0x62, count: 300_000)
            var offset = 0
            while offset < bytes.count {
                let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress! + offset, bytes.count - offset) }
                guard written > 0 else { return }
                offset += written
            }
            throw Stopped()
        }).run()
        #expect(result.standardOutputText.trimmingCharacters(in: .whitespacesAndNewlines) == "300000")
        #expect(result.inputFailure is Stopped)
    }

    @Test func aMissingExecutableIsAnError() async throws {
        await #expect(throws: ChildCommandError.self) { try await ChildCommand("/nonexistent/helper", []).run() }
    }

    /// The command answers only once this test's task ran again after the command started, on the one thread both
    /// tasks share: a runner that waited on that thread would never see the answer (the command gives up after a
    /// minute, and the test fails).
    @Test func waitingForACommandLeavesTheThreadToOtherTasks() async throws {
        try await withTaskExecutorPreference(OneThreadExecutor.shared) { try await commandAnsweringAfterThisTaskRan() }
    }

    private func commandAnsweringAfterThisTaskRan() async throws {
        let directory = NSTemporaryDirectory() + "/child-command-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let started = "\(directory)/started", go = "\(directory)/go"
        let script = """
            touch '\(started)'
            for _ in $(seq 1200); do [ -e '\(go)' ] && { echo answered; exit 0; }; sleep 0.05; done
            echo gave up >&2; exit 1
            """
        async let answer = ChildCommand("/bin/sh", ["-c", script]).run()
        // Bounded, so that a command that never starts fails the test below instead of hanging it.
        for _ in 0..<6000 where !FileManager.default.fileExists(atPath: started) { try await Task.sleep(for: .milliseconds(10)) }
        FileManager.default.createFile(atPath: go, contents: nil)
        let result = try await answer
        #expect(result.status == 0, "\(result.standardErrorText)")
        #expect(result.standardOutputText == "answered\n")
    }

    @Test func cancellingTheWaitKillsTheCommand() async throws {
        let waiting = Task { try await ChildCommand("/bin/sleep", ["600"]).run() }
        waiting.cancel()
        let result = try await waiting.value
        #expect(result.status == 128 + SIGKILL)
    }
}
