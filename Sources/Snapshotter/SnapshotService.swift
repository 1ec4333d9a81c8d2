import Blocking
import ContentStore
import Foundation
import Logging
import OCI

/// What `slipway snapshotter` answers containerd: the snapshot operations of `SnapshotStore`, except that a layer
/// need not be downloaded and applied when Slipway can present it otherwise. containerd's unpacker labels the
/// `Prepare` of each layer with the layer's chainID (`containerd.io/snapshot.ref`); when the layer is here, it
/// becomes a committed snapshot at once and `Prepare` answers `alreadyExists`, which containerd takes as "this
/// layer is here" (the remote-snapshotter protocol) and so skips the blob. A layer is here when
/// - Slipway's store has extracted it already (`slipway pull --unpack-layers`, `run`, `mount`, on this node or on
///   a shared store), or
/// - it is eStargz and the labels name its image: it is mounted lazily (`LazyLayers`), its files fetched as they
///   are read. A mount that fails (registry unknown or down, a TOC that does not verify) leaves the ordinary way:
///   containerd downloads the layer and checks it against its digest.
public struct SnapshotService: Sendable {
    public static let targetLabel = "containerd.io/snapshot.ref"

    public let snapshots: SnapshotStore
    public let store: ContentStore
    public let lazyLayers: LazyLayers?
    let logger: Logger

    public init(snapshots: SnapshotStore, store: ContentStore, lazyLayers: LazyLayers? = nil, logger: Logger = Logger(label: "slipway.snapshotter")) {
        self.snapshots = snapshots
        self.store = store
        self.lazyLayers = lazyLayers
        self.logger = logger
    }

    /// containerd's metadata layer then looks for a committed snapshot with the label and `parent` (`List` with
    /// a filter), so the name only has to be unique: a layer on different parents (namespaces) is one snapshot
    /// per parent.
    public func prepare(key: String, parent: String, labels: [String: String]) async throws -> [SnapshotMount] {
        logger.debug("prepare \(key) on \(parent.isEmpty ? "nothing" : parent)", metadata: ["labels": "\(labels)"])
        if let target = labels[Self.targetLabel] {
            let name = parent.isEmpty ? target : "\(target) on \(parent)"
            if let tree = try await cachedLayer(completing: target, on: parent) {
                try await commitPresent(name: name, parent: parent, labels: labels, tree: tree)
            }
            // A lazy layer an earlier mount materialized: the kernel's overlay serves it, no FUSE mount.
            if let toc = labels[LazyLayerOrigin.tocDigestLabel].flatMap({ try? Digest($0) }), store.hasMaterializedLayer(toc: toc) {
                try await commitPresent(name: name, parent: parent, labels: labels, tree: store.materializedLayerDirectory(toc: toc))
            }
            if let lazyLayers, let origin = LazyLayerOrigin(labels: labels) {
                let mountpoint = lazyLayers.mountpoint(of: origin.layer)
                let remoteLabels = labels.merging([LazyLayerOrigin.remoteLabel: "remote snapshot"]) { _, new in new }
                do {
                    try await lazyLayers.serialized(mountpoint) { [snapshots] in
                        let pinned = try await lazyLayers.mount(origin)
                        try await snapshots.commitExisting(name: name, parent: parent, labels: remoteLabels, tree: mountpoint, lazyOrigin: pinned)
                    }
                } catch SnapshotError.alreadyExists {
                    // Another pull of an image with this layer got there first: the layer is here all the same.
                } catch {
                    logger.warning("layer \(origin.layer) of \(origin.reference) is not mounted lazily, containerd fetches it: \(error)")
                    await unmountIfUnused(mountpoint)
                    // containerd applies the layer on top of its parents' mounts: those must be served.
                    try await reviveLazyLowers(from: parent)
                    return try await snapshots.prepare(key: key, parent: parent, labels: labels)
                }
                throw SnapshotError.alreadyExists(name)
            }
        }
        try await reviveLazyLowers(from: parent)
        return try await snapshots.prepare(key: key, parent: parent, labels: labels)
    }

    public func view(key: String, parent: String, labels: [String: String]) async throws -> [SnapshotMount] {
        try await reviveLazyLowers(from: parent)
        return try await snapshots.view(key: key, parent: parent, labels: labels)
    }

    /// The mounts of `key`, once every lazy layer below it is served by a live process.
    public func mounts(key: String) async throws -> [SnapshotMount] {
        try await reviveLazyLowers(from: try await snapshots.stat(key: key).parent)
        return try await snapshots.mounts(key: key)
    }

    /// Removes the snapshot, and the lazy mount it presented once no other snapshot uses it.
    public func remove(key: String) async throws {
        let removed = try await snapshots.remove(key: key)
        if removed.lazyOrigin != nil, let tree = removed.externalTree { await unmountIfUnused(tree) }
    }

    /// Removes the directories no snapshot names, and the lazy mounts no snapshot uses (a crash between mounting
    /// a layer and naming it leaves one); returns how many of each.
    @discardableResult
    public func cleanup() async throws -> (directories: Int, mounts: Int) {
        let directories = try await snapshots.cleanup()
        guard let lazyLayers else { return (directories, 0) }
        var mounts = 0
        for mountpoint in await lazyLayers.mountpoints() where await unmountIfUnused(mountpoint) { mounts += 1 }
        return (directories, mounts)
    }

    /// Mounts again every lazy layer whose process ended (after a reboot, or a crash of the mount process), so
    /// containerd's next `Mounts` finds them; returns how many. A layer that cannot be mounted now is tried again
    /// when a snapshot on it is mounted.
    @discardableResult
    public func reviveLazyLayers() async -> Int {
        guard let lazyLayers else { return 0 }
        var revived = 0
        for (mountpoint, origin) in await snapshots.lazyTrees() where await !lazyLayers.isAlive(mountpoint) {
            do {
                try await revive(mountpoint, origin, lazyLayers)
                revived += 1
            } catch {
                logger.warning("lazy layer \(origin.layer) at \(mountpoint) cannot be mounted again yet: \(error)")
            }
        }
        return revived
    }

    private func reviveLazyLowers(from parent: String) async throws {
        guard let lazyLayers else { return }
        for snapshot in try await snapshots.chain(from: parent) {
            guard let origin = snapshot.lazyOrigin, let mountpoint = snapshot.externalTree, await !lazyLayers.isAlive(mountpoint) else { continue }
            do {
                try await revive(mountpoint, origin, lazyLayers)
                logger.notice("lazy layer \(origin.layer) at \(mountpoint) had stopped and is mounted again")
            } catch {
                throw SnapshotError.failedPrecondition("lazy layer \(origin.layer) of \(origin.reference) cannot be mounted: \(error)")
            }
        }
    }

    private func revive(_ mountpoint: String, _ origin: LazyLayerOrigin, _ lazyLayers: LazyLayers) async throws {
        _ = try await lazyLayers.serialized(mountpoint) { [snapshots] in
            // A Remove queued before may have ended the last snapshot on it meanwhile.
            guard await snapshots.lazyTrees()[mountpoint] != nil, await !lazyLayers.isAlive(mountpoint) else { return }
            _ = try await lazyLayers.mount(origin)
        }
    }

    /// Whether it ended the mount (false when a snapshot uses it, or on failure, which is logged).
    @discardableResult
    private func unmountIfUnused(_ mountpoint: String) async -> Bool {
        guard let lazyLayers else { return false }
        do {
            return try await lazyLayers.serialized(mountpoint) { [snapshots] in
                guard await snapshots.lazyTrees()[mountpoint] == nil else { return false }
                try await lazyLayers.unmount(mountpoint)
                return true
            }
        } catch {
            logger.warning("cannot unmount the unused lazy layer at \(mountpoint): \(error)")
            return false
        }
    }

    private func commitPresent(name: String, parent: String, labels: [String: String], tree: String) async throws -> Never {
        do {
            try await snapshots.commitExisting(name: name, parent: parent, labels: labels, tree: tree)
        } catch SnapshotError.alreadyExists {
            // Another pull of an image with this layer got there first: the layer is here all the same.
        }
        throw SnapshotError.alreadyExists(name)
    }

    /// The extracted layer in Slipway's store whose diffID extends the parent's chain to `chainID`, if any. A
    /// chainID is the first diffID, then sha256 of "parent-chainID diffID" for each layer above (OCI image spec).
    /// containerd names snapshots `namespace/id/name`; the parent's chainID is its label, else its name's end.
    func cachedLayer(completing chainID: String, on parent: String) async throws -> String? {
        var parentChainID = ""
        if !parent.isEmpty {
            let base = try await snapshots.stat(key: parent)
            parentChainID = base.labels[Self.targetLabel] ?? String(parent.split(separator: "/").last ?? "")
        }
        let directory = "\(store.root)/layers/sha256"
        let candidates = await runBlocking { (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] }
        for name in candidates {
            guard let diffID = try? Digest("sha256:\(name)") else { continue }
            if Self.chainID(parent: parentChainID, diffID: diffID) == chainID { return store.layerDirectory(diffID) }
        }
        return nil
    }

    static func chainID(parent: String, diffID: Digest) -> String {
        guard !parent.isEmpty else { return diffID.description }
        return Digest.sha256(of: Array("\(parent) \(diffID)".utf8)).description
    }
}
