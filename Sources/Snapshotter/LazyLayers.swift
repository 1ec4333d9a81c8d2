import Blocking
import CLinux
import Foundation
import LazyFS
import OCI

#if canImport(Glibc)
import Glibc
#endif

/// Where a lazily mounted layer comes from: enough to mount it again after its process ended.
public struct LazyLayerOrigin: Codable, Sendable, Hashable {
    /// The image; pinned to its manifest digest once a mount has resolved it, so a moved tag cannot change it.
    public var reference: String
    /// The layer's blob digest.
    public var layer: Digest
    /// Its TOC's, as containerd read it from the manifest: the mount refuses a layer the image annotates otherwise.
    /// Nil for a plain gzip layer, which is served lazily only when the image has a gzip index for it.
    public var toc: Digest?

    public init(reference: String, layer: Digest, toc: Digest?) {
        self.reference = reference
        self.layer = layer
        self.toc = toc
    }

    /// An eStargz layer's annotation, which containerd passes on with every layer's `Prepare`.
    public static let tocDigestLabel = tocDigestAnnotation
    /// The image and the layer as the CRI plugin (the kubelet's path) and `ctr-remote image rpull` name them.
    static let referenceLabels = ["containerd.io/snapshot/cri.image-ref", "containerd.io/snapshot/remote/stargz.reference"]
    static let layerLabels = ["containerd.io/snapshot/cri.layer-digest", "containerd.io/snapshot/remote/stargz.digest"]
    static let manifestLabel = "containerd.io/snapshot/cri.manifest-digest"
    /// Added to a snapshot served by a lazy mount, as the reference snapshotter does.
    public static let remoteLabel = "containerd.io/snapshot/remote"

    /// The layer a `Prepare` names, if the labels give its image and digest: an eStargz layer (with its TOC
    /// digest) or another one, which a gzip index may serve. A reference or digest that does not parse is no
    /// layer (the snapshot is then made the ordinary way).
    public init?(labels: [String: String]) {
        let toc = labels[Self.tocDigestLabel].flatMap({ try? Digest($0) })
        if labels[Self.tocDigestLabel] != nil, toc == nil { return nil }
        guard let name = Self.referenceLabels.lazy.compactMap({ labels[$0] }).first, var reference = try? Reference(parsing: name),
            let layer = Self.layerLabels.lazy.compactMap({ labels[$0] }).first.flatMap({ try? Digest($0) })
        else { return nil }
        if reference.digest == nil, let manifest = labels[Self.manifestLabel].flatMap({ try? Digest($0) }),
            let pinned = try? Reference(registry: reference.registry, repository: reference.repository, digest: manifest)
        {
            reference = pinned
        }
        self.init(reference: reference.description, layer: layer, toc: toc)
    }

    /// The reference pinned to the manifest a mount of it resolved (`state`), unless it names one already or the
    /// mount served another repository's image (a layer is shared by every image that has it; their manifests
    /// are not).
    func pinned(to state: MountState) -> LazyLayerOrigin {
        guard let parsed = try? Reference(parsing: reference), parsed.digest == nil, let digest = try? Digest(state.manifestDigest),
            let served = try? Reference(parsing: state.image), served.registry == parsed.registry, served.repository == parsed.repository,
            let pinned = try? Reference(registry: parsed.registry, repository: parsed.repository, digest: digest)
        else { return self }
        return LazyLayerOrigin(reference: pinned.description, layer: layer, toc: toc)
    }
}

/// The layers `slipway snapshotter` serves lazily: each a read-only FUSE mount at `DIRECTORY/ALGORITHM-HEX`, served
/// by a `slipway mount --layer` process of its own, shared by every snapshot of that layer (any parent, any
/// namespace). The processes outlive the snapshotter, so running containers keep their files when it restarts or
/// crashes; a mount whose process died is mounted again before it is handed out.
public actor LazyLayers {
    /// The command line that serves `origin` at `mountpoint` in the foreground and publishes its state in the store.
    public typealias MountCommand = @Sendable (_ origin: LazyLayerOrigin, _ mountpoint: String) -> [String]

    public nonisolated let directory: String
    let storeRoot: String
    let command: MountCommand
    /// How long a mount may take to come up (resolve the image, read the TOC) before the snapshot is made the
    /// ordinary way.
    let startTimeout: Duration
    /// The last operation queued on each mountpoint: mounting, naming and unmounting one layer happen one at a time.
    private var queues: [String: Task<Void, Never>] = [:]

    public init(directory: String, storeRoot: String, startTimeout: Duration = .seconds(60), command: @escaping MountCommand) {
        self.directory = directory
        self.storeRoot = storeRoot
        self.startTimeout = startTimeout
        self.command = command
    }

    public nonisolated func mountpoint(of layer: Digest) -> String { "\(directory)/\(layer.algorithm.rawValue)-\(layer.hex)" }

    /// Runs `body` after every operation queued before on `mountpoint`, and before any queued after.
    public func serialized<T: Sendable>(_ mountpoint: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let previous = queues[mountpoint]
        let task = Task<T, any Error> {
            await previous?.value
            return try await body()
        }
        let tail = Task { _ = try? await task.value }
        queues[mountpoint] = tail
        defer { if queues[mountpoint] == tail { queues[mountpoint] = nil } }
        return try await task.value
    }

    /// Mounts the layer unless a live mount serves it already; returns the origin pinned to the manifest the mount
    /// resolved. Call inside `serialized` on its mountpoint.
    public func mount(_ origin: LazyLayerOrigin) async throws -> LazyLayerOrigin {
        let mountpoint = mountpoint(of: origin.layer)
        let statePath = MountState.path(forMountpoint: mountpoint, storeRoot: storeRoot)
        if await isAlive(mountpoint), let state = MountState.read(statePath) {
            // The mount verified its TOC against its own image's manifest: another image that names another TOC
            // for this layer digest is refused, not served what the first one verified.
            guard state.layer == origin.layer.description, state.tocDigest == origin.toc?.description else {
                throw SnapshotError.failedPrecondition(
                    "layer \(origin.layer) is mounted with TOC \(state.tocDigest ?? "none"), not \(origin.toc?.description ?? "none") as \(origin.reference) says")
            }
            return origin.pinned(to: state)
        }
        try await runBlocking {
            try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        }
        // What a dead process left: its mount ("transport endpoint is not connected"), its state.
        _ = try await MountControl.unmount(mountpoint, storeRoot: storeRoot, timeout: .seconds(5))
        let state = try await MountControl.startInBackground(command(origin, mountpoint), statePath: statePath, timeout: startTimeout)
        return origin.pinned(to: state)
    }

    /// Whether a live process serves the mount at `mountpoint`. Off the pool: the FUSE server answers `statfs`,
    /// and may be busy.
    public nonisolated func isAlive(_ mountpoint: String) async -> Bool {
        let statePath = MountState.path(forMountpoint: mountpoint, storeRoot: storeRoot)
        return await runBlocking {
            guard let state = MountState.read(statePath), state.ready, state.error == nil, state.ownerAlive else { return false }
            var info = statfs()
            return statfs(mountpoint, &info) == 0 && info.f_type == Self.fuseMagic
        }
    }

    static let fuseMagic: Int = 0x6573_5546

    /// Ends the mount at `mountpoint` and removes its directory. Call inside `serialized` on its mountpoint.
    public func unmount(_ mountpoint: String) async throws {
        // A dead FUSE mount answers ENOTCONN, not ENOENT.
        var info = stat()
        guard lstat(mountpoint, &info) == 0 || errno != ENOENT else { return }
        _ = try await MountControl.unmount(mountpoint, storeRoot: storeRoot)
        try await runBlocking {
            // rmdir, not a recursive delete: if the mount is still there (detached while busy) nothing below it is touched.
            if rmdir(mountpoint) != 0, errno != ENOENT {
                throw SnapshotError.failedPrecondition("cannot remove \(mountpoint): \(String(cString: strerror(errno)))")
            }
        }
    }

    /// The mountpoints under `directory`, mounted or not.
    public func mountpoints() async -> [String] {
        let directory = directory
        return await runBlocking {
            ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted().map { "\(directory)/\($0)" }
        }
    }
}
