import Foundation
import LazyFS
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Starting a mount in the background and ending it, with stand-in mount processes (shell scripts that publish a
/// state the way `slipway mount --foreground` does): what the caller sees when the mount comes up, reports an
/// error, or dies before it says anything; and what `unmount` leaves when the mount's process is gone.
@Suite(.tags(.integration)) struct MountControlTests {
    let scratch: ScratchDirectory
    let statePath: String

    init() throws {
        scratch = try ScratchDirectory()
        statePath = scratch.sub("store/mounts/state.json")
    }

    /// A state file as a mount process publishes it, with `PID` standing for the process's own pid.
    func stateTemplate(ready: Bool, error: String? = nil) throws -> String {
        let state = MountState(mountpoint: scratch.sub("mnt"), image: "demo", pid: 0, ready: ready, error: error, prefetch: .all)
        let path = scratch.sub("template-\(UUID().uuidString).json")
        try state.write(to: path)
        return try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(of: "\"pid\" : 0", with: "\"pid\" : PID")
    }

    /// A stand-in mount process: it publishes `template` (atomically, as MountState.write does) after a moment,
    /// then `then`s.
    func script(publishing template: String?, then tail: String) throws -> [String] {
        var body = "sleep 0.2\n"
        if let template {
            try template.write(toFile: scratch.sub("template"), atomically: true, encoding: .utf8)
            body += "sed \"s/PID/$$/\" '\(scratch.sub("template"))' > '\(statePath).tmp' && mv '\(statePath).tmp' '\(statePath)'\n"
        }
        return ["/bin/sh", "-c", body + tail]
    }

    @Test func returnsTheStateOnceTheMountIsLiveAndLeavesItRunning() async throws {
        let command = try script(publishing: try stateTemplate(ready: true), then: "exec sleep 60")
        let state = try await MountControl.startInBackground(command, statePath: statePath)
        #expect(state.ready)
        #expect(state.ownerAlive, "the mount's process goes on serving")
        #expect(getsid(state.pid) == state.pid, "it leads a session of its own")
        kill(state.pid, SIGKILL)
    }

    @Test func aMountThatReportsAnErrorFailsWithIt() async throws {
        let command = try script(publishing: try stateTemplate(ready: false, error: "no such image"), then: "exec sleep 60")
        let failure = await #expect(throws: MountFailure.self) { try await MountControl.startInBackground(command, statePath: statePath) }
        #expect(failure?.message == "no such image")
        if let state = MountState.read(statePath) { kill(state.pid, SIGKILL) }
    }

    @Test func aMountProcessThatDiesFirstFailsWithTheEndOfItsLog() async throws {
        let command = try script(publishing: nil, then: "echo 'resolving the image'; echo 'error: the registry refused the token' >&2; exit 3")
        let failure = await #expect(throws: MountFailure.self) { try await MountControl.startInBackground(command, statePath: statePath) }
        #expect(failure?.message == "resolving the image\nthe registry refused the token", "one error: prefix, the caller's")
        #expect(failure?.log == MountControl.logPath(forState: statePath))
    }

    @Test func unmountingAMountWhoseProcessDiedCleansUpItsStateAndLog() async throws {
        let command = try script(publishing: try stateTemplate(ready: true), then: "exec sleep 60")
        let started = try await MountControl.startInBackground(command, statePath: statePath)
        kill(started.pid, SIGKILL)
        try await waitUntil("the mount process is gone") { !started.ownerAlive }
        let mountpoint = scratch.sub("mnt")
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        let statePathForMount = MountState.path(forMountpoint: mountpoint, storeRoot: scratch.sub("store"))
        try FileManager.default.moveItem(atPath: statePath, toPath: statePathForMount)
        FileManager.default.createFile(atPath: MountControl.logPath(forState: statePathForMount), contents: Data("log".utf8))

        let unmounted = try await MountControl.unmount(mountpoint, storeRoot: scratch.sub("store"), timeout: .seconds(1))
        #expect(unmounted.finalState?.pid == started.pid, "the last state published")
        #expect(unmounted.stillServing == nil)
        #expect(!FileManager.default.fileExists(atPath: statePathForMount))
        #expect(!FileManager.default.fileExists(atPath: MountControl.logPath(forState: statePathForMount)))
    }

    /// A mount process that has not ended by the timeout (a busy mount is detached, and its process serves the
    /// open files) is named in the outcome, so `slipway umount` can say why the store is still in use.
    @Test func aMountProcessThatOutlivesTheTimeoutIsReported() async throws {
        let command = try script(publishing: try stateTemplate(ready: true), then: "trap '' TERM; exec sleep 60")
        let started = try await MountControl.startInBackground(command, statePath: statePath)
        defer { kill(started.pid, SIGKILL) }
        let mountpoint = scratch.sub("mnt")
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        try FileManager.default.moveItem(atPath: statePath, toPath: MountState.path(forMountpoint: mountpoint, storeRoot: scratch.sub("store")))

        let unmounted = try await MountControl.unmount(mountpoint, storeRoot: scratch.sub("store"), timeout: .milliseconds(300))
        #expect(unmounted.stillServing == started.pid)
        #expect(started.ownerAlive)
    }

    /// A process that has ended but that nobody reaped (its parent, here this test, has not waited for it) no
    /// longer owns its mount.
    @Test func aZombieDoesNotOwnItsMount() async throws {
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        defer { argv.forEach { free($0) } }
        try #require(posix_spawn(&pid, "/bin/true", nil, nil, argv, environ) == 0)
        defer {
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        try await waitUntil("the child has ended") {
            (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8))?.contains(") Z ") == true
        }
        #expect(kill(pid, 0) == 0, "a zombie still answers signal 0")
        #expect(!MountState(mountpoint: "/mnt", image: "demo", pid: pid, prefetch: .all).ownerAlive)
    }

    /// A state file outlives a reboot and its process: a pid named by a state of another boot, or now used by a
    /// process started at another time, is not the mount's owner, and must not be signalled.
    @Test func aReusedPidDoesNotOwnTheMount() {
        var state = MountState(mountpoint: "/mnt", image: "demo", pid: getpid(), prefetch: .all)
        #expect(state.ownerAlive)
        state.processStart = (state.processStart ?? 0) + 1
        #expect(!state.ownerAlive)
        state = MountState(mountpoint: "/mnt", image: "demo", pid: getpid(), prefetch: .all)
        state.bootID = "another boot"
        #expect(!state.ownerAlive)
    }
}
