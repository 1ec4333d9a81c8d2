import ArgumentParser
import ContentStore
import Foundation
import LazyFS
import Slipway
import Snapshotter

struct SnapshotterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshotter",
        abstract: "Serve containerd's snapshots API from Slipway's store (a proxy snapshotter plugin).",
        discussion: """
            containerd's config.toml names the socket:

              [proxy_plugins.slipway]
                type = "snapshot"
                address = "/run/slipway/snapshotter.sock"

            and `ctr --snapshotter slipway` or the CRI plugin's `snapshotter = "slipway"` use it. eStargz layers \
            are mounted lazily when the pull names their image (the CRI plugin with disable_snapshot_annotations = \
            false, or `ctr-remote image rpull`): containerd downloads none of their bytes, and files arrive as they \
            are read. Each lazy layer is served by a `slipway mount --layer` process that outlives the snapshotter, \
            so running containers keep their files across its restarts. Layers the store has extracted already \
            (slipway pull --unpack-layers, run, mount) are not extracted again. Snapshots live in --root and survive \
            restarts of the snapshotter and of containerd. While it runs, the store is in use: `slipway gc` waits.
            """)

    @OptionGroup var global: GlobalOptions
    @Option(help: "The unix socket to serve on (containerd's proxy_plugins address).") var address = "/run/slipway/snapshotter.sock"
    @Option(help: "Where the snapshots live [STORE/snapshotter].") var root: String?
    @Flag(inversion: .prefixedNo, help: "Mount eStargz layers lazily (else containerd downloads and applies every layer).")
    var lazy = true
    @Option(help: "What a lazy layer fetches before it is read: none, landmark, all (see slipway mount).")
    var prefetch: PrefetchMode = .all
    @Option(help: "Seconds a read of a lazy layer waits for the registry before failing with EIO.") var fetchTimeout: Double = 20

    func validate() throws {
        guard fetchTimeout > 0 else { throw ValidationError("--fetch-timeout must be positive") }
    }

    func run() async throws {
        let store = try global.openStore()
        // The snapshots of layers the store has extracted are those directories: gc must not remove them.
        let lease = try await store.lockForWriting()
        defer { lease.release() }
        // Resolved once it exists: the mount processes name their mountpoints by resolved path, and so must this.
        let givenRoot = root ?? "\(store.root)/snapshotter"
        try FileManager.default.createDirectory(atPath: givenRoot, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let snapshotRoot = resolvedPath(givenRoot)
        let snapshots = try await SnapshotStore(root: snapshotRoot)
        let service = SnapshotService(snapshots: snapshots, store: store, lazyLayers: lazy ? lazyLayers(root: snapshotRoot) : nil, logger: global.makeLogger())
        // What a crash of the last snapshotter left half made; containerd would only ask after its next collection.
        let leftovers = try await service.cleanup()
        if leftovers.directories > 0 {
            FileHandle.standardError.write(Data("slipway snapshotter: removed \(leftovers.directories) unnamed snapshot directories\n".utf8))
        }
        if leftovers.mounts > 0 {
            FileHandle.standardError.write(Data("slipway snapshotter: ended \(leftovers.mounts) lazy mounts no snapshot uses\n".utf8))
        }
        // Lazy layers whose processes ended (a reboot) are mounted before containerd asks for a container's mounts.
        let revived = await service.reviveLazyLayers()
        if revived > 0 { FileHandle.standardError.write(Data("slipway snapshotter: mounted \(revived) lazy layers again\n".utf8)) }
        let server = try SnapshotterServer(service: service, socket: resolvedPath(address), prefetch: nodePrefetch(store: store))
        let signals = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { server.stop() }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        try await server.run {
            FileHandle.standardError.write(Data(
                "slipway snapshotter: serving on \(server.socket), snapshots in \(snapshotRoot), layers from \(store.root)\n".utf8))
        }
        await snapshots.close()
        // The lazy layers' processes go on serving: containers running from them keep their files.
        FileHandle.standardError.write(Data("slipway snapshotter: stopped\n".utf8))
    }

    /// `slipway prefetch --snapshotter` asks this process to do what `slipway prefetch --store` does here: pull
    /// with this command's registry options and the node's credentials, and extract the layers into the store.
    private func nodePrefetch(store: ContentStore) -> @Sendable (String, String?) async throws -> NodePrefetchResult {
        let global = global
        return { reference, platform in
            let location = try parseLocation(reference)
            // Whoever can reach the socket names the image: a registry's, never a path on the node.
            guard case .registry = location else { throw ValidationError("the snapshotter prefetches registry images only, not \(reference)") }
            var options = global
            if let platform { options.platform = platform }
            let (report, extracted, seconds) = try await prefetchLayers(location, with: options, into: store)
            return NodePrefetchResult(
                manifestDigest: report.manifestDigest, layers: report.layers, bytesTransferred: report.bytesTransferred,
                layersExtracted: extracted, seconds: seconds)
        }
    }

    /// Each lazy layer is a `slipway mount --layer` of this executable, with this command's store and registry options.
    private func lazyLayers(root: String) -> LazyLayers {
        let executable = executablePath()
        let arguments = global.forwarded + ["--prefetch", prefetch.rawValue, "--fetch-timeout", String(fetchTimeout)]
        return LazyLayers(directory: "\(root)/lazy", storeRoot: resolvedPath(global.storeRoot)) { origin, mountpoint in
            // docker:// so that a registry host named like `oci:5000` is not read as a layout path.
            // A plain layer is mounted only if a gzip index serves it; otherwise the mount fails at once and the
            // snapshot is made the ordinary way.
            let lazyProof = origin.toc.map { ["--toc-digest", $0.description] } ?? ["--lazy-only"]
            return [executable, "mount"] + arguments + ["--layer", origin.layer.description] + lazyProof + [
                "--foreground", "--quiet", "docker://" + origin.reference, mountpoint,
            ]
        }
    }
}
