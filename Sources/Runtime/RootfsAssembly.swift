import ContentStore
import Foundation
import LazyFS
import Logging
import OCI
import SIF
import Images
import Synchronization
import Blocking

#if canImport(Glibc)
import Glibc
#endif

/// Where a container's root filesystem comes from.
public enum RootfsMode: Sendable, Equatable, CustomStringConvertible {
    /// The store's per-layer cache (each layer extracted once), stacked by kernel overlayfs: nothing is copied.
    case unpacked
    /// A lazy mount of the image (eStargz layers fetched as read) as the overlay's lower layer.
    case lazy
    /// The primary squashfs partition of a SIF file.
    case sif(String)

    public var description: String {
        switch self {
        case .unpacked: return "unpacked"
        case .lazy: return "lazy"
        case .sif(let path): return "sif (\(path))"
        }
    }
}

/// A mounted root filesystem and what undoes it. `cleanup` runs the undo steps in reverse order, once, whatever
/// happened before; call it on every path (`defer`).
public final class AssembledRootfs: Sendable {
    /// The rootfs mountpoint (or directory) to give the runtime.
    public let path: String
    public let readOnly: Bool
    /// What the user should know about how the root was built (e.g. read-only because not root).
    public let notes: [String]
    private let undo: Mutex<[(String, @Sendable () async throws -> Void)]>

    init(path: String, readOnly: Bool, notes: [String], undo: [(String, @Sendable () async throws -> Void)]) {
        self.path = path
        self.readOnly = readOnly
        self.notes = notes
        self.undo = Mutex(undo)
    }

    /// Undoes the assembly (unmounts, releases the store). Returns the problems met; later steps run anyway.
    @discardableResult
    public func cleanup() async -> [String] {
        let steps = undo.withLock { steps in
            defer { steps = [] }
            return steps
        }
        var problems: [String] = []
        for (what, step) in steps.reversed() {
            do { try await step() } catch { problems.append("\(what): \(error)") }
        }
        return problems
    }
}

/// Undo steps collected while assembling, run if a later step fails.
final class UndoList: @unchecked Sendable {
    private(set) var steps: [(String, @Sendable () async throws -> Void)] = []
    func add(_ what: String, _ step: @escaping @Sendable () async throws -> Void) { steps.append((what, step)) }
    func runAll() async {
        for (_, step) in steps.reversed() { try? await step() }
        steps = []
    }
}

/// Builds a container's root filesystem in a run directory, in one of three ways (see `RootfsMode`). As root
/// every mode ends in a kernel overlay with a throwaway upper directory on the store's filesystem, so the
/// container can write and the cached layers stay untouched. Without root: `.unpacked` extracts the image into a
/// private directory (overlayfs needs root), `.lazy` and `.sif` use their read-only mount as is.
public struct RootfsAssembly: Sendable {
    public let mode: RootfsMode
    public let directory: RunDirectory
    public let store: ContentStore
    public var logger: Logger
    public var progress: ProgressHandler
    public var lazyOptions = LazyMountOptions()
    public var isRoot = geteuid() == 0

    public init(mode: RootfsMode, directory: RunDirectory, store: ContentStore, logger: Logger, progress: @escaping ProgressHandler = { _ in }) {
        self.mode = mode
        self.directory = directory
        self.store = store
        self.logger = logger
        self.progress = progress
    }

    /// Assembles the root. `.unpacked` and `.lazy` need the image (from any source: missing layer blobs are
    /// fetched into the store, or read lazily); `.sif` does not. On failure everything done so far is undone.
    public func assemble(image: (any Image)?, name: String = "") async throws -> AssembledRootfs {
        let undo = UndoList()
        do {
            switch mode {
            case .unpacked:
                guard let image else { preconditionFailure("unpacked mode needs the image") }
                return try await unpacked(image, undo: undo)
            case .lazy:
                guard let image else { preconditionFailure("lazy mode needs the image") }
                return try await lazy(image, name: name, undo: undo)
            case .sif(let file):
                return try await sif(file, undo: undo)
            }
        } catch {
            await undo.runAll()
            throw error
        }
    }

    // MARK: Unpacked

    private func unpacked(_ image: any Image, undo: UndoList) async throws -> AssembledRootfs {
        // Held shared until the end of the run: gc must not remove layers under a running container.
        let lease = try await store.lockForWriting()
        undo.add("release the store") { lease.release() }
        try Task.checkCancellation()
        let rootfs = try directory.makeDirectory("rootfs")
        guard isRoot else {
            // Overlayfs needs root: extract a private copy instead (whiteouts applied, owners those of the caller).
            try FileManager.default.removeItem(atPath: rootfs)
            _ = try await Unpacker(store: store, progress: progress).unpack(image, to: rootfs)
            return AssembledRootfs(
                path: rootfs, readOnly: false, notes: ["not root: the image was extracted into a private directory (overlayfs needs root)"],
                undo: undo.steps)
        }
        _ = try await Unpacker(store: store, progress: progress).cacheLayers(image)
        try Task.checkCancellation()
        var lowers = Self.overlayLowers(of: image, in: store)
        if lowers.isEmpty { lowers = [try directory.makeDirectory("empty")] }
        try await mountOverlay(lowers: lowers, at: rootfs, undo: undo)
        return AssembledRootfs(path: rootfs, readOnly: false, notes: [], undo: undo.steps)
    }

    /// The image's extracted layers as overlay lower directories, topmost first. A layer that occurs twice is kept
    /// at its topmost position: overlayfs refuses a directory given twice, and the lower copy adds nothing.
    public static func overlayLowers(of image: any Image, in store: ContentStore) -> [String] {
        overlayLowers(of: image) { store.layerDirectory($0.diffID) } ?? []
    }

    /// The same with each layer's directory from `directory`; nil when a layer has none.
    static func overlayLowers(of image: any Image, directory: (any Layer) -> String?) -> [String]? {
        var lowers: [String] = []
        for layer in image.layers.reversed() {
            guard let lower = directory(layer) else { return nil }
            if !lowers.contains(lower) { lowers.append(lower) }
        }
        return lowers
    }

    /// Short links to the lower directories (so many layers fit the kernel's one page of mount options), a
    /// throwaway upper and work directory, and the overlay at `rootfs`.
    private func mountOverlay(lowers: [String], at rootfs: String, undo: UndoList) async throws {
        let links = try directory.makeDirectory("l")
        var linked: [String] = []
        for (index, lower) in lowers.enumerated() {
            let link = "\(links)/\(index)"
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: lower)
            linked.append(link)
        }
        let upper = try directory.makeDirectory("upper")
        let work = try directory.makeDirectory("work")
        try await Mounts.overlay(lowers: linked, upper: upper, work: work, at: rootfs, base: directory.path)
        undo.add("unmount the overlay at \(rootfs)") {
            guard Mounts.unmount(rootfs) else { throw RuntimeError.mountFailed(what: "(unmount) the overlay", target: rootfs, errno: EBUSY) }
        }
    }

    // MARK: Lazy

    private func lazy(_ image: any Image, name: String, undo: UndoList) async throws -> AssembledRootfs {
        if isRoot, let lowers = try await localLowers(of: image, undo: undo) {
            let rootfs = try directory.makeDirectory("rootfs")
            try await mountOverlay(lowers: lowers, at: rootfs, undo: undo)
            return AssembledRootfs(path: rootfs, readOnly: false, notes: ["every layer is on this node: no lazy mount"], undo: undo.steps)
        }
        if !isRoot { try Self.requireFUSEAccess("--mode lazy") }
        let lower = try directory.makeDirectory("lower")
        try Task.checkCancellation()
        let mount: LazyMount
        do {
            mount = try await LazyMount.mount(
                image, named: name, store: store, at: lower, options: lazyOptions, logger: logger, progress: progress)
        } catch {
            // A failed mount leaves its state file (with the error) for `slipway status`; this one is private.
            try? FileManager.default.removeItem(atPath: MountState.path(forMountpoint: lower, storeRoot: store.root))
            throw error
        }
        undo.add("end the lazy mount at \(lower)") { [progress] in
            // After a run that was not interrupted, the rest of the image arrives and is written out, so the next run
            // of any image with these layers stacks them with the kernel's overlay and needs no FUSE.
            if !Task.isCancelled {
                await mount.completeAndMaterialize { left in
                    progress(.message(String(format: "finishing the prefetch (%.1f MB left) so that the next run needs no lazy mount", Double(left) / 1e6)))
                }
            }
            await Self.endLazyMount(mount, at: lower)
        }
        try Task.checkCancellation()
        guard isRoot else {
            return AssembledRootfs(
                path: lower, readOnly: true,
                notes: ["not root: the container's root is the lazy mount itself, read-only (overlayfs over FUSE needs root)"],
                undo: undo.steps)
        }
        let rootfs = try directory.makeDirectory("rootfs")
        try await mountOverlay(lowers: [lower], at: rootfs, undo: undo)
        return AssembledRootfs(path: rootfs, readOnly: false, notes: [], undo: undo.steps)
    }

    /// The image's layers as overlay lower directories (topmost first) when every one is on this node, each
    /// materialized from an earlier lazy mount or extracted by a pull, so the run needs no FUSE at all. Layers too
    /// small to be worth a lazy mount (a TOC would be most of them) are pulled whole when they are all that is
    /// missing of an image otherwise here, as a patch release's top layer is. Nil when a layer would have to be
    /// served lazily.
    private func localLowers(of image: any Image, undo: UndoList) async throws -> [String]? {
        func local(_ layer: any Layer) -> String? {
            if let toc = LayerMaterializer.tocDigest(of: layer), store.hasMaterializedLayer(toc: toc) {
                return store.materializedLayerDirectory(toc: toc)
            }
            return store.hasLayerDirectory(layer.diffID) ? store.layerDirectory(layer.diffID) : nil
        }
        let missing = image.layers.filter { local($0) == nil }
        // An image none of whose layers is here is mounted lazily, as asked, however small.
        guard missing.count < image.layers.count, missing.allSatisfy({ $0.descriptor.size <= Self.pulledWholeLayerSize }) else { return nil }
        // Held shared until the end of the run: gc must not remove layers under a running container.
        let lease = try await store.lockForWriting()
        undo.add("release the store") { lease.release() }
        let unpacker = Unpacker(store: store, progress: progress)
        for (position, layer) in image.layers.enumerated() where missing.contains(where: { $0.descriptor.digest == layer.descriptor.digest }) {
            _ = try await unpacker.cacheLayer(layer, position: position, of: image.layers.count)
        }
        // Every layer has its directory now (the store lease keeps gc away).
        return Self.overlayLowers(of: image, directory: local)
    }

    /// Compressed size up to which a missing layer is pulled whole rather than mounted lazily: one request, about
    /// what its footer and TOC would cost.
    static let pulledWholeLayerSize: Int64 = 256 << 10

    /// Unmounts, waits (bounded) for the FUSE session to end, and removes the mount's state file.
    static func endLazyMount(_ mount: LazyMount, at mountpoint: String) async {
        // Unmounting runs fusermount3 and waits for it.
        await runBlocking { mount.stop() }
        let ended = MountEnd(mount)
        if await !ended.wait(seconds: 10) {
            // A mount that does not go (a reader stuck in it): detach it; the session ends with its last user.
            _ = umount2(mountpoint, Int32(MNT_DETACH))
            _ = await ended.wait(seconds: 5)
        }
        try? FileManager.default.removeItem(atPath: mount.statePath)
        try? FileManager.default.removeItem(atPath: mount.statePath.replacingOccurrences(of: ".json", with: ".log"))
    }

    /// FUSE without root needs /dev/fuse to be open to the user (Debian makes it 0666 through udev; hosts without
    /// that rule keep it root-only).
    static func requireFUSEAccess(_ what: String) throws {
        guard access("/dev/fuse", R_OK | W_OK) != 0 else { return }
        throw RuntimeError.needsRoot(
            "\(what) without root needs FUSE, and /dev/fuse is not open to you here (\(String(cString: strerror(errno)))); "
                + "run as root, use --mode unpacked, or make /dev/fuse mode 0666")
    }

    // MARK: SIF

    /// A classic SIF's primary partition, or an OCI-SIF's layer squashfs images stacked with overlayfs.
    private func sif(_ file: String, undo: UndoList) async throws -> AssembledRootfs {
        let partitions: [(offset: Int64, size: Int64)]
        do {
            let sif = try SIFFile(path: file)
            if let contents = try OCISIFContents.read(sif) {
                guard isRoot else { throw RuntimeError.needsRoot("running an OCI-SIF stacks its layers with overlayfs, which needs root") }
                partitions = contents.layers
            } else {
                let descriptor = try sif.requirePrimaryPartition()
                partitions = [(descriptor.offset, descriptor.size)]
            }
        } catch let error as RuntimeError {
            throw error
        } catch {
            throw RuntimeError.sifUnavailable("\(file): \(error)")
        }
        if isRoot {
            var lowers: [String] = []
            for (index, partition) in partitions.enumerated() {
                let lower = try directory.makeDirectory(partitions.count == 1 ? "lower" : "lower-\(index)")
                // mount(8) sets up a loop device over the partition's byte range (autoclear: it goes with the mount).
                try await HelperCommand.run(
                    "/bin/mount", ["-t", "squashfs", "-o", "loop,ro,offset=\(partition.offset),sizelimit=\(partition.size)", file, lower])
                undo.add("unmount the squashfs at \(lower)") {
                    guard Mounts.unmount(lower) else { throw RuntimeError.mountFailed(what: "(unmount) the squashfs", target: lower, errno: EBUSY) }
                }
                lowers.insert(lower, at: 0)
            }
            let rootfs = try directory.makeDirectory("rootfs")
            try await mountOverlay(lowers: lowers, at: rootfs, undo: undo)
            return AssembledRootfs(path: rootfs, readOnly: false, notes: [], undo: undo.steps)
        }
        let partition = partitions[0]
        let lower = try directory.makeDirectory("lower")
        try Self.requireFUSEAccess("--mode sif")
        guard let squashfuse = HelperCommand.find("squashfuse") else {
            throw RuntimeError.needsRoot("running a SIF without root needs squashfuse: apt-get install squashfuse (or run as root)")
        }
        try await HelperCommand.run(squashfuse, ["-o", "offset=\(partition.offset)", file, lower])
        undo.add("unmount the squashfuse mount at \(lower)") {
            if let fusermount = HelperCommand.find("fusermount3") ?? HelperCommand.find("fusermount") {
                try await HelperCommand.run(fusermount, ["-u", lower])
            } else if !Mounts.unmount(lower) {
                throw RuntimeError.mountFailed(what: "(unmount) squashfuse", target: lower, errno: EBUSY)
            }
        }
        return AssembledRootfs(
            path: lower, readOnly: true, notes: ["not root: the container's root is the SIF's squashfs, read-only (overlayfs needs root)"],
            undo: undo.steps)
    }
}

/// The end of a lazy mount's FUSE session, awaited with a bound. The session's end is waited for on a thread of its
/// own (it may never come, when a reader is stuck in the mount); a wait that gives up leaves that thread behind.
private final class MountEnd: Sendable {
    private struct State {
        var ended = false
        var waiters: [UInt64: CheckedContinuation<Bool, Never>] = [:]
        var nextWaiter: UInt64 = 0
        /// Waits whose time ran out before they were registered.
        var expired: Set<UInt64> = []
    }
    private let state = Mutex(State())

    init(_ mount: LazyMount) {
        Task { [self] in
            await runBlocking { _ = mount.wait() }
            let waiters = state.withLock { state in
                state.ended = true
                defer { state.waiters = [:] }
                return state.waiters
            }
            for waiter in waiters.values { waiter.resume(returning: true) }
        }
    }

    /// Whether the session ended within `seconds`.
    func wait(seconds: Int) async -> Bool {
        let id = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        let timer = Task { [self] in
            try? await Task.sleep(for: .seconds(seconds))
            let waiter = state.withLock { state in
                let waiter = state.waiters.removeValue(forKey: id)
                if waiter == nil { state.expired.insert(id) }
                return waiter
            }
            waiter?.resume(returning: false)
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { continuation in
            let outcome: Bool? = state.withLock { state in
                if state.ended { return true }
                if state.expired.remove(id) != nil { return false }
                state.waiters[id] = continuation
                return nil
            }
            if let outcome { continuation.resume(returning: outcome) }
        }
    }
}
