import Foundation
import OCI
import Testing
import TestSupport

@testable import Runtime

#if canImport(Glibc)
import Glibc
#endif

/// The mount table from /proc/self/mountinfo, and what is decided from it.
@Suite(.tags(.unit)) struct MountTableTests {
    static let sample = """
        22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
        23 22 0:21 / /proc rw,nosuid,nodev,noexec shared:2 - proc proc rw
        40 22 0:35 / /mnt/with\\040space rw,relatime - tmpfs my\\040tmp rw,size=1024k
        41 40 0:36 / /mnt/with\\040space/inner\\011tab rw master:7 - fuse.squashfuse squashfuse ro,user_id=0
        42 22 0:37 / /mnt/back\\134slash rw - tmpfs tmpfs rw
        43 22 0:38 / /mnt/with rw - tmpfs tmpfs rw
        not a mountinfo line
        44 22 0:39 / /short rw -

        """

    func table() throws -> ([MountInfoEntry], ScratchDirectory) {
        let directory = try ScratchDirectory()
        try Self.sample.write(toFile: directory.sub("mountinfo"), atomically: true, encoding: .utf8)
        return (Mounts.table(directory.sub("mountinfo")), directory)
    }

    @Test func linesParseWithEscapesDecoded() throws {
        let (table, _) = try table()
        #expect(table.map(\.mountID) == [22, 23, 40, 41, 42, 43])
        #expect(table[0] == MountInfoEntry(mountID: 22, parentID: 1, mountpoint: "/", fsType: "ext4", source: "/dev/vda1"))
        #expect(table[2] == MountInfoEntry(mountID: 40, parentID: 22, mountpoint: "/mnt/with space", fsType: "tmpfs", source: "my tmp"))
        #expect(table[3].mountpoint == "/mnt/with space/inner\ttab")
        #expect(table[3].fsType == "fuse.squashfuse")
        #expect(table[4].mountpoint == "/mnt/back\\slash")
    }

    @Test func mountsUnderADirectoryDeepestFirst() throws {
        let (table, _) = try table()
        #expect(Mounts.mounts(under: "/mnt/with space", table: table) == ["/mnt/with space/inner\ttab", "/mnt/with space"])
        // A sibling that shares a prefix is not under the directory.
        #expect(Mounts.mounts(under: "/mnt/with", table: table) == ["/mnt/with"])
        #expect(Mounts.fsType(at: "/proc", table: table) == "proc")
        #expect(Mounts.fsType(at: "/nowhere", table: table) == nil)
    }

    @Test func missingFileIsAnEmptyTable() {
        #expect(Mounts.table("/nonexistent/mountinfo").isEmpty)
    }

    @Test func thisProcessesTableHasItsRoot() {
        #expect(Mounts.table().contains { $0.mountpoint == "/" })
    }

    @Test func cgroupLayoutIsReadFromTheTable() {
        func entry(_ id: Int, _ mountpoint: String, _ type: String) -> MountInfoEntry {
            MountInfoEntry(mountID: id, parentID: 1, mountpoint: mountpoint, fsType: type, source: type)
        }
        #expect(CgroupLayout.detect(table: [entry(1, "/sys/fs/cgroup", "cgroup2")]) == .unified)
        #expect(CgroupLayout.detect(table: [entry(1, "/sys/fs/cgroup", "tmpfs"), entry(2, "/sys/fs/cgroup/unified", "cgroup2")]) == .hybrid)
        #expect(CgroupLayout.detect(table: [entry(1, "/sys/fs/cgroup", "tmpfs"), entry(2, "/sys/fs/cgroup/memory", "cgroup")]) == .legacy)
        // The topmost mount at a path counts.
        #expect(CgroupLayout.detect(table: [entry(1, "/sys/fs/cgroup", "cgroup2"), entry(2, "/sys/fs/cgroup", "tmpfs")]) == .legacy)
        #expect(!CgroupLayout.crunRefuses(table: [entry(1, "/sys/fs/cgroup", "cgroup2")]))
    }

    @Test func overlayPathsEscapeTheirSeparators() {
        #expect(Mounts.escapeOverlayPath("/a,b:c\\d") == "/a\\,b\\:c\\\\d")
    }
}

/// How the OCI runtime is invoked.
@Suite(.tags(.unit)) struct OCIRuntimeTests {
    @Test func commandLineCarriesTheGlobalOptions() throws {
        let rootlessCrun = OCIRuntime(kind: .crun, executable: "/usr/bin/crun", identity: .rootless(hostUID: 1000, hostGID: 1000), stateRoot: "/run/s")
        #expect(
            try rootlessCrun.commandLine(["run", "--bundle", "/b", "id"])
                == ["/usr/bin/crun", "--root", "/run/s", "--cgroup-manager=disabled", "run", "--bundle", "/b", "id"])
        let rootRunc = OCIRuntime(kind: .runc, executable: "/usr/sbin/runc", identity: .root)
        #expect(try rootRunc.commandLine(["delete", "x"]) == ["/usr/sbin/runc", "delete", "x"])
        #expect(try OCIRuntime(kind: .runc, executable: "runc", identity: .rootless(hostUID: 1, hostGID: 1)).commandLine(["state"]) == ["runc", "state"])
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare"), "needs util-linux's unshare"))
    func hybridCgroupWorkaroundWrapsTheRuntime() throws {
        let runtime = OCIRuntime(
            kind: .crun, executable: "/usr/bin/crun", hidesHybridCgroups: true, identity: .rootless(hostUID: 1000, hostGID: 1000))
        let line = try runtime.commandLine(["run", "id"])
        #expect(line.first?.hasSuffix("/unshare") == true)
        #expect(Array(line[1...3]) == ["--user", "--map-root-user", "--mount"])
        #expect(line.suffix(4) == ["/usr/bin/crun", "--cgroup-manager=disabled", "run", "id"])
        // Inside the wrapper's user namespace the caller is root already.
        #expect(runtime.bundleIdentity == .rootless(hostUID: 0, hostGID: 0))
        let asRoot = OCIRuntime(kind: .crun, executable: "/usr/bin/crun", hidesHybridCgroups: true, identity: .root)
        #expect(try !asRoot.commandLine(["run", "id"]).contains("--user"))
        #expect(asRoot.bundleIdentity == .root)
    }

    @Test func exitStatusIsTheCodeOr128PlusTheSignal() {
        #expect(Runtime.ChildProcess.exitCode(0) == 0)
        #expect(Runtime.ChildProcess.exitCode(3 << 8) == 3)
        #expect(Runtime.ChildProcess.exitCode(SIGKILL) == 137)
        #expect(Runtime.ChildProcess.exitCode(SIGTERM | 0x80) == 143)
    }
}
