import Foundation
import Snapshotter
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// containerd's snapshot semantics: the life of a layer (prepare, commit, children on it), what each kind
/// mounts, the errors containerd tells apart, and metadata that survives a restart.
@Suite(.tags(.unit)) struct SnapshotStoreTests {
    let scratch: ScratchDirectory

    init() throws { scratch = try ScratchDirectory() }

    func open() async throws -> SnapshotStore { try await SnapshotStore(root: scratch.sub("snapshotter")) }

    @Test func aLayerIsPreparedWrittenCommittedAndBuiltOn() async throws {
        let store = try await open()
        let base = try await store.prepare(key: "extract-1 sha256:a", parent: "", labels: ["stage": "extract"])
        #expect(base.count == 1 && base[0].type == "bind" && base[0].options == ["rbind", "rw"])
        try "hello\n".write(toFile: base[0].source + "/hello", atomically: false, encoding: .utf8)
        try await store.commit(name: "sha256:a", key: "extract-1 sha256:a", labels: ["containerd.io/snapshot.ref": "sha256:a"])

        let committed = try await store.stat(key: "sha256:a")
        #expect(committed.kind == .committed && committed.parent == "" && committed.labels == ["containerd.io/snapshot.ref": "sha256:a"])
        await #expect(throws: SnapshotError.notFound("extract-1 sha256:a")) { try await store.stat(key: "extract-1 sha256:a") }
        #expect(try await store.usage(key: "sha256:a").inodes == 2)

        _ = try await store.prepare(key: "extract-2 sha256:b", parent: "sha256:a", labels: [:])
        try await store.commit(name: "sha256:b", key: "extract-2 sha256:b", labels: [:])
        let container = try await store.prepare(key: "default/5/ctr", parent: "sha256:b", labels: [:])
        #expect(container.count == 1 && container[0].type == "overlay")
        let options = container[0].options
        #expect(options.contains("lowerdir=\(scratch.sub("snapshotter"))/snapshots/2/fs:\(scratch.sub("snapshotter"))/snapshots/1/fs"), "top first: \(options)")
        #expect(options.contains("upperdir=\(scratch.sub("snapshotter"))/snapshots/3/fs"))
        #expect(options.contains("workdir=\(scratch.sub("snapshotter"))/snapshots/3/work"))
        #expect(try await store.mounts(key: "default/5/ctr") == container)
    }

    @Test func viewsAreReadOnly() async throws {
        let store = try await open()
        _ = try await store.prepare(key: "k1", parent: "", labels: [:])
        try await store.commit(name: "one", key: "k1", labels: [:])
        let single = try await store.view(key: "v1", parent: "one", labels: [:])
        #expect(single == [SnapshotMount(type: "bind", source: "\(scratch.sub("snapshotter"))/snapshots/1/fs", options: ["rbind", "ro"])])
        _ = try await store.prepare(key: "k2", parent: "one", labels: [:])
        try await store.commit(name: "two", key: "k2", labels: [:])
        let layered = try await store.view(key: "v2", parent: "two", labels: [:])
        #expect(layered.count == 1 && layered[0].type == "overlay" && layered[0].options.count == 1)
        #expect(layered[0].options[0].hasPrefix("lowerdir="))
        await #expect(throws: SnapshotError.failedPrecondition("snapshot v2 is not active")) {
            try await store.commit(name: "three", key: "v2", labels: [:])
        }
    }

    @Test func errorsAreTheClassesContainerdActsOn() async throws {
        let store = try await open()
        _ = try await store.prepare(key: "k", parent: "", labels: [:])
        await #expect(throws: SnapshotError.alreadyExists("k")) { try await store.prepare(key: "k", parent: "", labels: [:]) }
        await #expect(throws: SnapshotError.notFound("parent nothing")) { try await store.prepare(key: "x", parent: "nothing", labels: [:]) }
        await #expect(throws: SnapshotError.invalidArgument("parent k is not a committed snapshot")) {
            try await store.prepare(key: "x", parent: "k", labels: [:])
        }
        try await store.commit(name: "layer", key: "k", labels: [:])
        _ = try await store.prepare(key: "again", parent: "", labels: [:])
        await #expect(throws: SnapshotError.alreadyExists("layer")) { try await store.commit(name: "layer", key: "again", labels: [:]) }
        _ = try await store.prepare(key: "child", parent: "layer", labels: [:])
        await #expect(throws: SnapshotError.failedPrecondition("cannot remove snapshot layer: child is built on it")) {
            try await store.remove(key: "layer")
        }
        await #expect(throws: SnapshotError.failedPrecondition("snapshot layer is committed: prepare or view a snapshot on it to mount it")) {
            try await store.mounts(key: "layer")
        }
        await #expect(throws: SnapshotError.notFound("gone")) { try await store.remove(key: "gone") }
    }

    @Test func removingDeletesTheTreeAndCleanupTheUnnamedOnes() async throws {
        let store = try await open()
        let mounts = try await store.prepare(key: "k", parent: "", labels: [:])
        try "x".write(toFile: mounts[0].source + "/file", atomically: false, encoding: .utf8)
        try await store.remove(key: "k")
        #expect(!FileManager.default.fileExists(atPath: scratch.sub("snapshotter/snapshots/1")))
        // What a crash between creating a directory and naming it leaves.
        try FileManager.default.createDirectory(atPath: scratch.sub("snapshotter/snapshots/99/fs"), withIntermediateDirectories: true)
        _ = try await store.prepare(key: "kept", parent: "", labels: [:])
        #expect(try await store.cleanup() == 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.sub("snapshotter/snapshots")) == ["2"])
    }

    @Test func labelsChangeByUpdateAndNothingElseDoes() async throws {
        let store = try await open()
        _ = try await store.prepare(key: "k", parent: "", labels: ["a": "1", "b": "2"])
        let some = try await store.update(name: "k", labels: ["a": "10", "c": "3"], fieldPaths: ["labels.a", "labels.b"])
        #expect(some.labels == ["a": "10"])
        let all = try await store.update(name: "k", labels: ["z": "26"], fieldPaths: [])
        #expect(all.labels == ["z": "26"])
        await #expect(throws: SnapshotError.invalidArgument("cannot update parent of snapshot k: only labels change")) {
            try await store.update(name: "k", labels: [:], fieldPaths: ["parent"])
        }
    }

    @Test func listFiltersAsContainerdAsksForALayer() async throws {
        let store = try await open()
        _ = try await store.prepare(key: "k1", parent: "", labels: [:])
        try await store.commit(name: "sha256:a", key: "k1", labels: ["containerd.io/snapshot.ref": "sha256:a"])
        _ = try await store.prepare(key: "k2", parent: "sha256:a", labels: [:])
        try await store.commit(name: "sha256:b", key: "k2", labels: ["containerd.io/snapshot.ref": "sha256:b"])
        _ = try await store.prepare(key: "active", parent: "sha256:b", labels: ["team": "etl"])

        let found = try await store.list(filters: [#"labels."containerd.io/snapshot.ref"==sha256:b,parent==sha256:a"#])
        #expect(found.map(\.name) == ["sha256:b"])
        #expect(try await store.list(filters: [#"labels."containerd.io/snapshot.ref"==sha256:b,parent==sha256:x"#]).isEmpty)
        #expect(try await store.list(filters: ["kind==active", "name==sha256:a"]).map(\.name) == ["active", "sha256:a"])
        #expect(try await store.list(filters: ["labels.team"]).map(\.name) == ["active"])
        #expect(try await store.list(filters: ["kind!=committed"]).map(\.name) == ["active"])
        #expect(try await store.list(filters: [#"name~=^sha256:[ab]$"#]).count == 2)
        #expect(try await store.list(filters: []).count == 3)
        await #expect(throws: SnapshotError.self) { try await store.list(filters: ["labels.\"unterminated"]) }
        await #expect(throws: SnapshotError.self) { try await store.list(filters: ["==sha256:a"]) }
        await #expect(throws: SnapshotError.self) { try await store.list(filters: ["name==sha256:a,"]) }
    }

    @Test func snapshotsSurviveARestartAndOneSnapshotterServesARoot() async throws {
        let first = try await open()
        _ = try await first.prepare(key: "k", parent: "", labels: [:])
        try await first.commit(name: "layer", key: "k", labels: ["x": "y"])
        _ = try await first.prepare(key: "top", parent: "layer", labels: [:])
        await #expect(throws: SnapshotError.self) { try await open() }
        await first.close()

        let second = try await open()
        #expect(try await second.stat(key: "layer").labels == ["x": "y"])
        #expect(try await second.stat(key: "top").kind == .active)
        let next = try await second.prepare(key: "new", parent: "", labels: [:])
        #expect(next[0].source.hasSuffix("/snapshots/3/fs"), "ids go on where they were")
    }
}

/// The mounts a snapshot hands out work as the kernel reads them, the way containerd performs them.
@Suite(.tags(.integration), .enabled(if: geteuid() == 0, "mounting needs root")) struct SnapshotMountTests {
    @Test func aContainerWritesOnTopOfItsLayersAndAViewSeesThemMerged() async throws {
        let scratch = try ScratchDirectory()
        let store = try await SnapshotStore(root: scratch.sub("snapshotter"))
        for (index, name) in ["one", "two"].enumerated() {
            let mounts = try await store.prepare(key: "extract \(name)", parent: index == 0 ? "" : "one", labels: [:])
            let target = scratch.sub("extract-\(name)")
            try await perform(mounts, at: target)
            try "\(name)\n".write(toFile: "\(target)/\(name)", atomically: false, encoding: .utf8)
            try "from \(name)\n".write(toFile: "\(target)/shared", atomically: false, encoding: .utf8)
            try await runChecked("/bin/umount", [target])
            try await store.commit(name: name, key: "extract \(name)", labels: [:])
        }

        let container = scratch.sub("rootfs")
        try await perform(try await store.prepare(key: "container", parent: "two", labels: [:]), at: container)
        #expect(try String(contentsOfFile: "\(container)/one", encoding: .utf8) == "one\n")
        #expect(try String(contentsOfFile: "\(container)/shared", encoding: .utf8) == "from two\n", "the top layer wins")
        try "changed\n".write(toFile: "\(container)/one", atomically: false, encoding: .utf8)
        try await runChecked("/bin/umount", [container])

        let view = scratch.sub("view")
        try await perform(try await store.view(key: "look", parent: "two", labels: [:]), at: view)
        #expect(try String(contentsOfFile: "\(view)/one", encoding: .utf8) == "one\n", "the container wrote to its own tree")
        #expect(throws: (any Error).self, "a view is read-only") { try "x".write(toFile: "\(view)/new", atomically: false, encoding: .utf8) }
        try await runChecked("/bin/umount", [view])
    }

    private func perform(_ mounts: [SnapshotMount], at target: String) async throws {
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        for mount in mounts {
            if mount.type == "bind" {
                try await runChecked("/bin/mount", ["--bind", mount.source, target])
                if mount.options.contains("ro") { try await runChecked("/bin/mount", ["-o", "remount,bind,ro", target]) }
            } else {
                try await runChecked("/bin/mount", ["-t", mount.type, mount.source, "-o", mount.options.joined(separator: ","), target])
            }
        }
    }
}
