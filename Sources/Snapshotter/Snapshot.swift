import Foundation

/// A snapshot as containerd's snapshots API describes it (`containerd.services.snapshots.v1.Info`): a filesystem
/// tree that is being written (active), read-only for inspection (view), or an immutable layer (committed).
public struct Snapshot: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        case view, active, committed
    }

    /// The key while active or a view, the name once committed. containerd's metadata layer gives every
    /// namespace its own prefix (`ns/seq/key`), so names are unique across namespaces.
    public var name: String
    /// The name of the committed snapshot this one is built on; empty for a base layer.
    public var parent: String
    public var kind: Kind
    public var createdAt: Date
    public var updatedAt: Date
    public var labels: [String: String]
    /// The directory of this snapshot's own tree, relative to the snapshotter's root: it never changes, so
    /// committing is a metadata change and children keep finding their lowers.
    var directory: String
    /// A read-only tree outside the root that a committed snapshot presents instead (a layer Slipway's store has
    /// extracted already): never written, and left in place when the snapshot is removed.
    var externalTree: String? = nil
    /// For an external tree that is a lazy mount: what it serves, to mount it again if its process ended.
    var lazyOrigin: LazyLayerOrigin? = nil
    /// Measured once at commit (a committed tree does not change); nil while active, and for an external tree,
    /// which is measured when asked.
    var committedUsage: SnapshotUsage?
}

/// The mount that presents a snapshot (`containerd.types.Mount`): containerd performs it, not the snapshotter.
public struct SnapshotMount: Codable, Sendable, Equatable {
    public var type: String
    public var source: String
    public var options: [String]

    public init(type: String, source: String, options: [String]) {
        self.type = type
        self.source = source
        self.options = options
    }
}

/// Disk use of one snapshot's own tree (not its parents'), as `du` counts it.
public struct SnapshotUsage: Codable, Sendable, Equatable {
    public var bytes: Int64
    public var inodes: Int64
}
