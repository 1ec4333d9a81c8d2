import Blocking
import ContentStore
import Foundation
import OCI

/// What `slipway snapshotter` answers containerd: the snapshot operations of `SnapshotStore`, except that a layer
/// Slipway's store has extracted already (`slipway pull --unpack-layers`, `run`, `mount`, on this node or on a
/// shared store) is not extracted again. containerd's unpacker labels the `Prepare` of each layer with the layer's
/// chainID (`containerd.io/snapshot.ref`); when a cached layer completes that chain, the layer becomes a committed
/// snapshot at once and `Prepare` answers `alreadyExists`, which containerd takes as "this layer is here" (the
/// remote-snapshotter protocol) and so neither downloads nor applies the blob.
public struct SnapshotService: Sendable {
    public static let targetLabel = "containerd.io/snapshot.ref"

    public let snapshots: SnapshotStore
    public let store: ContentStore

    public init(snapshots: SnapshotStore, store: ContentStore) {
        self.snapshots = snapshots
        self.store = store
    }

    /// containerd's metadata layer then looks for a committed snapshot with the label and `parent` (`List` with
    /// a filter), so the name only has to be unique: a layer on different parents (namespaces) is one snapshot
    /// per parent.
    public func prepare(key: String, parent: String, labels: [String: String]) async throws -> [SnapshotMount] {
        if let target = labels[Self.targetLabel], let tree = try await cachedLayer(completing: target, on: parent) {
            let name = parent.isEmpty ? target : "\(target) on \(parent)"
            do {
                try await snapshots.commitExisting(name: name, parent: parent, labels: labels, tree: tree)
            } catch SnapshotError.alreadyExists {
                // Another pull of an image with this layer got there first: the layer is here all the same.
            }
            throw SnapshotError.alreadyExists(name)
        }
        return try await snapshots.prepare(key: key, parent: parent, labels: labels)
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
        let candidates = try await runBlocking { (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] }
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
