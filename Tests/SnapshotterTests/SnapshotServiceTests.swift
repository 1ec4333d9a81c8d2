import ContentStore
import Foundation
import OCI
import Snapshotter
import Testing
import TestSupport

/// Layers Slipway's store has extracted already become committed snapshots when containerd prepares them, the
/// way containerd's metadata layer then looks them up.
@Suite(.tags(.unit)) struct SnapshotServiceTests {
    let scratch: ScratchDirectory
    let store: ContentStore

    init() throws {
        scratch = try ScratchDirectory()
        store = try ContentStore(root: scratch.sub("store"))
    }

    /// A layer in the store's per-layer cache, named by a made-up diffID.
    func cachedLayer(_ name: String) throws -> String {
        let diffID = Digest.sha256(of: Array(name.utf8))
        let directory = store.layerDirectory(diffID)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try name.write(toFile: "\(directory)/\(name)", atomically: false, encoding: .utf8)
        return diffID.description
    }

    func chainID(_ parent: String, _ diffID: String) -> String {
        Digest.sha256(of: Array("\(parent) \(diffID)".utf8)).description
    }

    @Test func cachedLayersAreHereAtOnceAndOthersArePreparedForExtraction() async throws {
        let service = SnapshotService(snapshots: try await SnapshotStore(root: scratch.sub("snapshotter")), store: store)
        let base = try cachedLayer("base")
        let top = try cachedLayer("top")
        let ref = SnapshotService.targetLabel

        await #expect(throws: SnapshotError.alreadyExists(base)) {
            try await service.prepare(key: "default/1/extract-1 \(base)", parent: "", labels: [ref: base])
        }
        #expect(try await service.snapshots.usage(key: base).inodes == 2, "the store's layer directory and its file")
        let second = chainID(base, top)
        await #expect(throws: SnapshotError.alreadyExists("\(second) on \(base)")) {
            try await service.prepare(key: "default/2/extract-2 \(second)", parent: base, labels: [ref: second])
        }
        // What containerd's metadata layer asks after an alreadyExists.
        let found = try await service.snapshots.list(filters: [#"labels."containerd.io/snapshot.ref"==\#(second),parent=="\#(base)""#])
        #expect(found.map(\.kind) == [.committed])

        let container = try await service.prepare(key: "default/3/ctr", parent: "\(second) on \(base)", labels: [:])
        #expect(container[0].options.contains("lowerdir=\(store.root)/layers/sha256/\(top.dropFirst(7)):\(store.root)/layers/sha256/\(base.dropFirst(7))"))

        let unknown = chainID(second, "sha256:" + String(repeating: "0", count: 64))
        let extraction = try await service.prepare(key: "default/4/extract-3 \(unknown)", parent: "\(second) on \(base)", labels: [ref: unknown])
        #expect(extraction[0].type == "overlay", "a layer the store lacks is extracted by containerd")

        try await service.snapshots.remove(key: "default/4/extract-3 \(unknown)")
        try await service.snapshots.remove(key: "default/3/ctr")
        try await service.snapshots.remove(key: "\(second) on \(base)")
        #expect(FileManager.default.fileExists(atPath: "\(store.root)/layers/sha256/\(top.dropFirst(7))/top"), "the store's layer stays")
    }

    @Test func withoutTheTargetLabelEveryLayerIsExtracted() async throws {
        let service = SnapshotService(snapshots: try await SnapshotStore(root: scratch.sub("snapshotter")), store: store)
        let base = try cachedLayer("base")
        let mounts = try await service.prepare(key: "default/1/extract-1 \(base)", parent: "", labels: [:])
        #expect(mounts[0].type == "bind")
    }
}
