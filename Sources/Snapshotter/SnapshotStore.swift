import Blocking
import ContentStore
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// containerd's snapshot semantics over directories, as its overlay snapshotter has them: each snapshot owns
/// `snapshots/ID/fs` (and `work` for overlay), an active snapshot on a parent is an overlay of the parent chain
/// with its own tree as the upper layer, and committing turns an active tree into an immutable layer in place.
///
/// The metadata is one JSON file, replaced atomically after every change, so it survives a crash or restart of
/// the snapshotter and of containerd. A directory is created before the metadata names it and forgotten before it
/// is deleted: a crash leaves at most an unnamed directory, which `cleanup` removes. One snapshotter serves a
/// root at a time (an exclusive lock).
public actor SnapshotStore {
    public nonisolated let root: String
    private var metadata: Metadata
    /// Names an operation is creating, committing or removing while it waits for the disk: another operation
    /// on the same name meanwhile is refused as if it were already done.
    private var busy: Set<String> = []
    /// Counts the changes, so the file ends with the newest when two writes finish out of order.
    private var generation = 0
    private let writer: MetadataWriter
    private let lock: FileLock

    struct Metadata: Codable {
        var nextID = 1
        var snapshots: [String: Snapshot] = [:]
    }

    public init(root: String) async throws {
        self.root = root
        try await runBlocking {
            try FileManager.default.createDirectory(atPath: "\(root)/snapshots", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        guard let lock = try FileLock.tryAcquire("\(root)/lock", mode: .exclusive) else {
            throw SnapshotError.failedPrecondition("another slipway snapshotter serves \(root); stop it first")
        }
        self.lock = lock
        writer = MetadataWriter(path: "\(root)/metadata.json")
        do {
            metadata = try await runBlocking { [writer] in try writer.read() } ?? Metadata()
        } catch {
            lock.release()
            throw error
        }
    }

    /// Ends this store's hold on its root, so another snapshotter may open it.
    public func close() { lock.release() }

    // MARK: Creating

    /// A writable snapshot on `parent` (a committed snapshot, or "" for an empty tree), and the mounts that
    /// present it.
    public func prepare(key: String, parent: String, labels: [String: String]) async throws -> [SnapshotMount] {
        try await create(key: key, parent: parent, labels: labels, kind: .active)
    }

    /// A read-only snapshot of `parent`.
    public func view(key: String, parent: String, labels: [String: String]) async throws -> [SnapshotMount] {
        try await create(key: key, parent: parent, labels: labels, kind: .view)
    }

    private func create(key: String, parent: String, labels: [String: String], kind: Snapshot.Kind) async throws -> [SnapshotMount] {
        guard !key.isEmpty else { throw SnapshotError.invalidArgument("a snapshot needs a key") }
        guard metadata.snapshots[key] == nil, !busy.contains(key) else { throw SnapshotError.alreadyExists(key) }
        if !parent.isEmpty {
            guard let base = metadata.snapshots[parent] else { throw SnapshotError.notFound("parent \(parent)") }
            guard base.kind == .committed else {
                throw SnapshotError.invalidArgument("parent \(parent) is not a committed snapshot")
            }
        }
        let id = metadata.nextID
        metadata.nextID += 1
        let directory = "snapshots/\(id)"
        busy.insert(key)
        defer { busy.remove(key) }
        let path = "\(root)/\(directory)"
        try await runBlocking {
            for sub in ["fs", "work"] {
                try FileManager.default.createDirectory(atPath: "\(path)/\(sub)", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            }
        }
        let now = Date()
        let snapshot = Snapshot(
            name: key, parent: parent, kind: kind, createdAt: now, updatedAt: now, labels: labels, directory: directory, committedUsage: nil)
        metadata.snapshots[key] = snapshot
        try await persist()
        return mounts(of: snapshot)
    }

    /// Names `tree`, an existing read-only tree outside the root, as the committed snapshot `name` on `parent`.
    public func commitExisting(
        name: String, parent: String, labels: [String: String], tree: String, lazyOrigin: LazyLayerOrigin? = nil
    ) async throws {
        guard !name.isEmpty else { throw SnapshotError.invalidArgument("a committed snapshot needs a name") }
        guard metadata.snapshots[name] == nil, !busy.contains(name) else { throw SnapshotError.alreadyExists(name) }
        if !parent.isEmpty {
            guard metadata.snapshots[parent]?.kind == .committed else { throw SnapshotError.notFound("parent \(parent)") }
        }
        busy.insert(name)
        defer { busy.remove(name) }
        // Its usage is measured when asked (rarely): walking a whole layer would slow every pull that skips it.
        let now = Date()
        metadata.snapshots[name] = Snapshot(
            name: name, parent: parent, kind: .committed, createdAt: now, updatedAt: now, labels: labels, directory: "",
            externalTree: tree, lazyOrigin: lazyOrigin, committedUsage: nil)
        try await persist()
    }

    // MARK: Reading

    public func mounts(key: String) throws -> [SnapshotMount] {
        let snapshot = try existing(key)
        guard snapshot.kind != .committed else {
            throw SnapshotError.failedPrecondition("snapshot \(key) is committed: prepare or view a snapshot on it to mount it")
        }
        return mounts(of: snapshot)
    }

    public func stat(key: String) throws -> Snapshot { try existing(key) }

    /// The snapshot named `name` and the committed snapshots below it, top first ([] for "").
    public func chain(from name: String) throws -> [Snapshot] {
        guard !name.isEmpty else { return [] }
        var result = [try existing(name)]
        while let parent = result.last?.parent, !parent.isEmpty, let base = metadata.snapshots[parent], result.count <= metadata.snapshots.count {
            result.append(base)
        }
        return result
    }

    /// The lazily mounted trees snapshots name, with what each serves.
    public func lazyTrees() -> [String: LazyLayerOrigin] {
        var trees: [String: LazyLayerOrigin] = [:]
        for snapshot in metadata.snapshots.values {
            if let tree = snapshot.externalTree, let origin = snapshot.lazyOrigin { trees[tree] = origin }
        }
        return trees
    }

    /// The snapshots that match any of `filters` (containerd's syntax), or all of them when there is none.
    public func list(filters: [String]) throws -> [Snapshot] {
        let parsed = try filters.filter { !$0.isEmpty }.map(SnapshotFilter.init(parsing:))
        return metadata.snapshots.values
            .filter { snapshot in parsed.isEmpty || parsed.contains { $0.matches(snapshot) } }
            .sorted { $0.name < $1.name }
    }

    /// The snapshot's own tree's size and inodes (what it adds to its parents).
    public func usage(key: String) async throws -> SnapshotUsage {
        let snapshot = try existing(key)
        if let measured = snapshot.committedUsage { return measured }
        let path = treePath(snapshot)
        return try await runBlocking { try DirectoryUsage.measure(path) }
    }

    // MARK: Changing

    /// Turns the active snapshot `key` into the committed snapshot `name`, in place.
    public func commit(name: String, key: String, labels: [String: String]) async throws {
        var snapshot = try existing(key)
        guard snapshot.kind == .active else { throw SnapshotError.failedPrecondition("snapshot \(key) is not active") }
        guard !name.isEmpty else { throw SnapshotError.invalidArgument("a committed snapshot needs a name") }
        guard metadata.snapshots[name] == nil, !busy.contains(name) else { throw SnapshotError.alreadyExists(name) }
        busy.formUnion([key, name])
        defer { busy.subtract([key, name]) }
        let path = treePath(snapshot)
        snapshot.committedUsage = try await runBlocking { try DirectoryUsage.measure(path) }
        snapshot.name = name
        snapshot.kind = .committed
        snapshot.labels = labels
        snapshot.updatedAt = Date()
        metadata.snapshots[key] = nil
        metadata.snapshots[name] = snapshot
        try await persist()
    }

    /// Changes a snapshot's labels: all of them (`fieldPaths` empty or `labels`), or the ones named
    /// `labels.KEY` (set from `info`, or removed when `info` lacks them). Nothing else can change.
    public func update(name: String, labels: [String: String], fieldPaths: [String]) async throws -> Snapshot {
        var snapshot = try existing(name)
        if fieldPaths.isEmpty {
            snapshot.labels = labels
        }
        for path in fieldPaths {
            if path == "labels" {
                snapshot.labels = labels
            } else if path.hasPrefix("labels."), path.count > 7 {
                let key = String(path.dropFirst(7))
                snapshot.labels[key] = labels[key]
            } else {
                throw SnapshotError.invalidArgument("cannot update \(path) of snapshot \(name): only labels change")
            }
        }
        snapshot.updatedAt = Date()
        metadata.snapshots[name] = snapshot
        try await persist()
        return snapshot
    }

    /// Forgets a snapshot and deletes its tree (an external tree stays: its owner decides). A snapshot others are
    /// built on stays. Returns what was removed.
    @discardableResult
    public func remove(key: String) async throws -> Snapshot {
        let snapshot = try existing(key)
        if let child = metadata.snapshots.values.first(where: { $0.parent == key }) {
            throw SnapshotError.failedPrecondition("cannot remove snapshot \(key): \(child.name) is built on it")
        }
        busy.insert(key)
        defer { busy.remove(key) }
        metadata.snapshots[key] = nil
        try await persist()
        guard snapshot.externalTree == nil else { return snapshot }
        let path = "\(root)/\(snapshot.directory)"
        try await runBlocking { try removeTree(path) }
        return snapshot
    }

    /// Deletes the directories no snapshot names (left by a crash between creating a directory and naming it,
    /// or between forgetting a snapshot and deleting its tree). Returns how many.
    @discardableResult
    public func cleanup() async throws -> Int {
        // A directory being created is not named yet: cleaning up waits for a quiet moment.
        guard busy.isEmpty else { return 0 }
        let named = Set(metadata.snapshots.values.map(\.directory))
        let snapshotsDirectory = "\(root)/snapshots"
        return try await runBlocking {
            let entries = try FileManager.default.contentsOfDirectory(atPath: snapshotsDirectory)
            var removed = 0
            for entry in entries where !named.contains("snapshots/\(entry)") {
                try removeTree("\(snapshotsDirectory)/\(entry)")
                removed += 1
            }
            return removed
        }
    }

    // MARK: Helpers

    private func existing(_ key: String) throws -> Snapshot {
        guard let snapshot = metadata.snapshots[key] else { throw SnapshotError.notFound(key) }
        return snapshot
    }

    private func treePath(_ snapshot: Snapshot) -> String { snapshot.externalTree ?? "\(root)/\(snapshot.directory)/fs" }

    /// The committed trees below `snapshot`, top first.
    private func lowers(of snapshot: Snapshot) -> [String] {
        var result: [String] = []
        var parent = snapshot.parent
        while !parent.isEmpty, let base = metadata.snapshots[parent] {
            result.append(treePath(base))
            parent = base.parent
        }
        return result
    }

    /// containerd performs these: a bind mount where one tree suffices, else an overlay (writable with the
    /// snapshot's own tree as upper, read-only of the lowers alone for a view).
    private func mounts(of snapshot: Snapshot) -> [SnapshotMount] {
        let lowers = lowers(of: snapshot)
        switch snapshot.kind {
        case .active where lowers.isEmpty, .committed:
            return [SnapshotMount(type: "bind", source: treePath(snapshot), options: ["rbind", "rw"])]
        case .active:
            return [SnapshotMount(type: "overlay", source: "overlay", options: [
                "workdir=\(root)/\(snapshot.directory)/work", "upperdir=\(treePath(snapshot))", "lowerdir=\(lowers.joined(separator: ":"))",
            ])]
        case .view:
            if lowers.count <= 1 {
                return [SnapshotMount(type: "bind", source: lowers.first ?? treePath(snapshot), options: ["rbind", "ro"])]
            }
            return [SnapshotMount(type: "overlay", source: "overlay", options: ["lowerdir=\(lowers.joined(separator: ":"))"])]
        }
    }

    private func persist() async throws {
        generation += 1
        let (snapshot, generation, writer) = (metadata, generation, writer)
        try await runBlocking { try writer.write(snapshot, generation: generation) }
    }
}

/// Writes the metadata file, one write at a time; a write of an older generation than the file's is dropped.
private final class MetadataWriter: Sendable {
    let path: String
    private let writtenGeneration = Mutex<Int>(0)

    init(path: String) { self.path = path }

    func read() throws -> SnapshotStore.Metadata? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        do {
            return try JSONDecoder.snapshotter.decode(SnapshotStore.Metadata.self, from: data)
        } catch {
            throw SnapshotError.failedPrecondition("\(path) is damaged (\(error)); move it away to start with no snapshots")
        }
    }

    func write(_ metadata: SnapshotStore.Metadata, generation: Int) throws {
        let bytes = Array(try JSONEncoder.snapshotter.encode(metadata))
        try writtenGeneration.withLock { written in
            guard generation > written else { return }
            try AtomicFile.write(bytes, to: path, mode: 0o600)
            written = generation
        }
    }
}

extension JSONEncoder {
    static var snapshotter: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }
}

extension JSONDecoder {
    static var snapshotter: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}

/// `rm -rf`, without following symbolic links out of the tree.
func removeTree(_ path: String) throws {
    var info = stat()
    guard lstat(path, &info) == 0 else { return }
    try FileManager.default.removeItem(atPath: path)
}
