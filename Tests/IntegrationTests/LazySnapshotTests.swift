import ContentStore
import Foundation
import LazyFS
import OCI
import Snapshotter
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The snapshotter's lazy layers against a real registry and real `slipway mount --layer` processes, driven as
/// containerd's unpacker drives them (a `Prepare` labelled like the CRI plugin's): labels that name nothing
/// mountable and layers that do not verify become ordinary snapshots, a registry that goes away makes reads fail
/// with EIO in bounded time, two pulls share one mount, and removing the last snapshot ends the mount.
@Suite(.tags(.integration, .slow), .enabled(if: fuseAvailable, "needs /dev/fuse and root"), .serialized)
struct LazySnapshotTests {
    struct Setup {
        let service: SnapshotService
        let lazyLayers: LazyLayers
        let reference: String
        let layer: Digest
        let toc: Digest
        let store: String

        /// A layer `Prepare` as the CRI plugin labels it; `change` edits the labels.
        func prepare(_ key: String, parent: String = "", change: (inout [String: String]) -> Void = { _ in }) async throws -> [SnapshotMount] {
            var labels = [
                SnapshotService.targetLabel: "sha256:\(String(repeating: "c", count: 64))-\(key)",
                LazyLayerOrigin.tocDigestLabel: toc.description,
                "containerd.io/snapshot/cri.image-ref": reference,
                "containerd.io/snapshot/cri.layer-digest": layer.description,
            ]
            change(&labels)
            return try await service.prepare(key: key, parent: parent, labels: labels)
        }

        var mountpoint: String { lazyLayers.mountpoint(of: layer) }
    }

    /// The demo image as eStargz behind the fault proxy, and a service whose lazy mounts time out reads after 2 s;
    /// with `throughMirror`, the mounts read through a `slipway serve` cache of the proxy (given to `body`).
    func withSetup(
        throughMirror: Bool = false, _ body: (Setup, FaultProxy, ScratchDirectory, RunningCache?) async throws -> Void
    ) async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let layout = try makeDemoLayout(scratch, largeFileBytes: 6 << 20)
            try await runChecked(slipwayBinary, ["copy", "-q", "oci:\(layout.root):demo", "\(registry.host)/demo:v1"])
            try await runChecked(
                slipwayBinary,
                ["convert", "-q", "--chunk-size", "1048576", "--store", scratch.sub("convert-store"), "\(registry.host)/demo:v1", "\(registry.host)/demo:esgz"])
            let reference = "\(proxy.host)/demo:esgz"
            let manifest = try await registryManifest(registry.host, "demo", "esgz")
            // The largest layer holds /opt/app/data.bin.
            let largest = try #require(manifest.layers.max { $0.size < $1.size })
            let toc = try Digest(try #require(largest.annotations?[LazyLayerOrigin.tocDigestLabel]))
            let store = scratch.sub("store")
            func serve(mirrorArguments: [String], cache: RunningCache?) async throws {
                let lazyLayers = LazyLayers(directory: scratch.sub("lazy"), storeRoot: store, startTimeout: .seconds(30)) { origin, mountpoint in
                    [slipwayBinary, "mount", "--store", store] + mirrorArguments + [
                        "--prefetch", "none", "--fetch-timeout", "2", "--layer", origin.layer.description,
                    ] + (origin.toc.map { ["--toc-digest", $0.description] } ?? []) + [
                        "--foreground", "--quiet", origin.reference, mountpoint,
                    ]
                }
                let service = SnapshotService(
                    snapshots: try await SnapshotStore(root: scratch.sub("snapshotter")), store: try ContentStore(root: store), lazyLayers: lazyLayers)
                let setup = Setup(service: service, lazyLayers: lazyLayers, reference: reference, layer: largest.digest, toc: toc, store: store)
                try await body(setup, proxy, scratch, cache)
                await service.snapshots.close()
            }
            if throughMirror {
                try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache")) { cache in
                    try await serve(mirrorArguments: ["--registry-mirror", cache.url], cache: cache)
                }
            } else {
                try await serve(mirrorArguments: [], cache: nil)
            }
        }
    }

    @Test func labelsThatNameNothingMountableAndLayersThatDoNotVerifyBecomeOrdinarySnapshots() async throws {
        try await withSetup { setup, proxy, scratch, _ in
            let other = Digest.sha256(of: Array("not in the image".utf8))
            let cases: [(String, (inout [String: String]) -> Void)] = [
                ("unknown-registry", { $0["containerd.io/snapshot/cri.image-ref"] = "127.0.0.1:9/demo:esgz" }),
                ("unknown-repository", { $0["containerd.io/snapshot/cri.image-ref"] = "\(proxy.host)/nothing:esgz" }),
                ("layer-not-in-image", { $0["containerd.io/snapshot/cri.layer-digest"] = other.description }),
                ("wrong-toc-label", { $0[LazyLayerOrigin.tocDigestLabel] = other.description }),
            ]
            for (key, change) in cases {
                let mounts = try await setup.prepare(key, change: change)
                // An ordinary, empty snapshot for containerd to apply the layer into, and nothing left mounted.
                #expect(mounts.count == 1 && mounts[0].type == "bind" && !mounts[0].source.contains("/lazy/"), "\(key): \(mounts)")
                #expect(try await setup.service.snapshots.stat(key: key).kind == .active, "\(key)")
                #expect(!FileManager.default.fileExists(atPath: setup.mountpoint), "\(key): the failed mount's directory stays")
            }
            // A TOC that does not match the image's annotation is never served: the registry holds a manifest whose
            // annotation names another TOC (labels and manifest agree, the bytes do not).
            let tampered = try await pushWithTOCAnnotation(other, on: setup.layer, proxy: proxy, scratch: scratch)
            let mounts = try await setup.prepare("tampered-toc") {
                $0["containerd.io/snapshot/cri.image-ref"] = tampered
                $0[LazyLayerOrigin.tocDigestLabel] = other.description
            }
            #expect(mounts.first?.source.contains("/lazy/") == false)
            #expect(!FileManager.default.fileExists(atPath: setup.mountpoint))
        }
    }

    @Test func twoPullsShareAMountAndReadsFailWithEIOWhenTheRegistryIsGone() async throws {
        try await withSetup { setup, proxy, _, _ in
            // Two namespaces pull the image at once: both layers are here, served by one mount.
            async let first = expectAlreadyExists { try await setup.prepare("team-a/1/extract") }
            async let second = expectAlreadyExists { try await setup.prepare("team-b/1/extract") }
            let (a, b) = try await (first, second)
            #expect(a && b)
            #expect(await setup.lazyLayers.isAlive(setup.mountpoint))
            let named = try await setup.service.snapshots.list(filters: [])
            #expect(named.count == 2 && named.allSatisfy { $0.kind == .committed && $0.labels[LazyLayerOrigin.remoteLabel] != nil })
            // A third pull names another TOC for the same layer digest: the mount, verified against the first TOC,
            // is not lent to it; it gets an ordinary snapshot.
            let other = Digest.sha256(of: Array("another toc".utf8))
            let refused = try await setup.prepare("team-c/1/extract") { $0[LazyLayerOrigin.tocDigestLabel] = other.description }
            #expect(refused.first?.source.contains("/lazy/") == false && refused.first?.type == "bind", "\(refused)")
            #expect(await setup.lazyLayers.isAlive(setup.mountpoint))
            try await setup.service.remove(key: "team-c/1/extract")

            // A container on the layer: the layer is its lower, and files read through it.
            let mounts = try await setup.service.prepare(key: "team-a/2/container", parent: named[0].name, labels: [:])
            #expect(mounts.first?.source == setup.mountpoint || mounts.first?.options.contains { $0.contains(setup.mountpoint) } == true, "\(mounts)")
            let data = setup.mountpoint + "/opt/app/data.bin"
            // The registry goes away before the asset was read: its reads fail with EIO within the fetch timeout.
            proxy.inject(.status(503), path: "/blobs/\(setup.layer)", times: .max)
            let started = ContinuousClock.now
            let failed = try await offThePool { try readFile(data) }
            #expect(failed.errno == EIO)
            #expect(ContinuousClock.now - started < .seconds(15))
            proxy.removeAllRules()
            let healed = try await offThePool { try readFile(data) }
            #expect(healed.errno == 0 && healed.bytes == 6 << 20)

            // The mount goes with the last snapshot that uses it, with its process.
            let statePath = MountState.path(forMountpoint: setup.mountpoint, storeRoot: setup.store)
            let pid = try #require(MountState.read(statePath)?.pid)
            try await setup.service.remove(key: "team-a/2/container")
            try await setup.service.remove(key: named[0].name)
            #expect(await setup.lazyLayers.isAlive(setup.mountpoint), "still used by \(named[1].name)")
            await #expect(throws: SnapshotError.self) { try await setup.service.remove(key: "no-such-snapshot") }
            try await setup.service.remove(key: named[1].name)
            #expect(!FileManager.default.fileExists(atPath: setup.mountpoint))
            try await waitUntil("the mount process \(pid) ended") { kill(pid, 0) != 0 }

            // A mount no snapshot names (a crash between mounting a layer and naming it) goes at the next cleanup.
            let origin = LazyLayerOrigin(reference: setup.reference, layer: setup.layer, toc: setup.toc)
            _ = try await setup.lazyLayers.serialized(setup.mountpoint) { try await setup.lazyLayers.mount(origin) }
            #expect(await setup.lazyLayers.isAlive(setup.mountpoint))
            let cleaned = try await setup.service.cleanup()
            #expect(cleaned.mounts == 1 && cleaned.directories == 0)
            #expect(!FileManager.default.fileExists(atPath: setup.mountpoint))
        }
    }

    @Test func aLayerAnEarlierMountWroteOutIsPreparedAsItsDirectoryWithoutFUSE() async throws {
        try await withSetup { setup, _, _, _ in
            #expect(try await expectAlreadyExists { try await setup.prepare("team-a/1/extract") })
            // The workload reads the whole layer; when its mount ends, the layer is written out.
            let served = try await describeTreeOffThePool(setup.mountpoint)
            let pid = try #require(MountState.read(MountState.path(forMountpoint: setup.mountpoint, storeRoot: setup.store))?.pid)
            let first = try await setup.service.snapshots.list(filters: [])
            #expect(first.count == 1)
            for snapshot in first { try await setup.service.remove(key: snapshot.name) }
            try await waitUntil("the mount process \(pid) ended") { kill(pid, 0) != 0 }
            let directory = try ContentStore(root: setup.store).materializedLayerDirectory(toc: setup.toc)
            #expect(FileManager.default.fileExists(atPath: directory))

            // The next pull of the layer commits that directory: no mount process, and it is the same tree.
            #expect(try await expectAlreadyExists { try await setup.prepare("team-b/1/extract") })
            #expect(!(await setup.lazyLayers.isAlive(setup.mountpoint)))
            let named = try await setup.service.snapshots.list(filters: [])
            #expect(named.count == 1 && named[0].labels[LazyLayerOrigin.remoteLabel] == nil, "\(named)")
            let mounts = try await setup.service.prepare(key: "team-b/2/container", parent: named[0].name, labels: [:])
            #expect(mounts.first?.source == directory || mounts.first?.options.contains { $0.contains(directory) } == true, "\(mounts)")
            let written = try await describeTreeOffThePool(directory)
            #expect(Set(written.keys) == Set(served.keys))
            for (path, entry) in served where written[path] != entry {
                Issue.record("\(path): served \(entry) vs written \(written[path].map(\.description) ?? "missing")")
            }
            try await setup.service.remove(key: "team-b/2/container")
        }
    }

    /// With `--registry-mirror` (the snapshotter forwards its own), a lazy layer's TOC and chunks come through the
    /// cluster's `slipway serve` cache, which fetches them upstream once.
    @Test func lazyLayersReadThroughTheClustersCache() async throws {
        try await withSetup(throughMirror: true) { setup, proxy, _, cache in
            let cache = try #require(cache)
            let before = proxy.requests(matching: "/blobs/\(setup.layer)", method: "GET").count
            #expect(try await expectAlreadyExists { try await setup.prepare("k8s.io/1/extract") })
            let data = try await offThePool { try readFile(setup.mountpoint + "/opt/app/data.bin") }
            #expect(data.errno == 0 && data.bytes == 6 << 20)
            // Everything the mount read came from the cache (which asked upstream with ?ns=), none straight from the
            // registry: the registry's requests for the layer are the cache's, counted by its metrics.
            #expect(try await cache.metric("slipway_cache_manifest_misses_total") >= 1)
            let upstream = try await cache.metric("slipway_cache_upstream_bytes_total")
            #expect(upstream > 6 << 20, "the cache fetched \(upstream) bytes upstream")
            #expect(try await cache.metric("slipway_cache_served_bytes_total") > 6 << 20)
            #expect(proxy.requests(matching: "/blobs/\(setup.layer)", method: "GET").count > before)
            for snapshot in try await setup.service.snapshots.list(filters: []) { try await setup.service.remove(key: snapshot.name) }
            #expect(!FileManager.default.fileExists(atPath: setup.mountpoint))
        }
    }

    private func expectAlreadyExists(_ body: () async throws -> [SnapshotMount]) async throws -> Bool {
        do {
            _ = try await body()
            return false
        } catch SnapshotError.alreadyExists {
            return true
        }
    }

    /// Runs a blocking read (a FUSE read that waits for the registry) on a thread of its own.
    private func offThePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try body() }) }.start()
        }
    }

    /// The demo image's manifest in the registry.
    private func registryManifest(_ host: String, _ repository: String, _ tag: String) async throws -> Manifest {
        let fetched = try await curl(
            "http://\(host)/v2/\(repository)/manifests/\(tag)", headers: ["Accept: application/vnd.oci.image.manifest.v1+json"])
        try #require(fetched.status == 200)
        return try JSONDecoder().decode(Manifest.self, from: fetched.body)
    }

    /// Pushes the image again as `demo:tampered`, its `layer` annotated with `toc` instead of its real TOC digest.
    private func pushWithTOCAnnotation(_ toc: Digest, on layer: Digest, proxy: FaultProxy, scratch: ScratchDirectory) async throws -> String {
        let fetched = try await curl(
            "http://\(proxy.host)/v2/demo/manifests/esgz", headers: ["Accept: application/vnd.oci.image.manifest.v1+json"])
        var json = try #require(try JSONSerialization.jsonObject(with: fetched.body) as? [String: Any])
        var layers = try #require(json["layers"] as? [[String: Any]])
        for index in layers.indices where layers[index]["digest"] as? String == layer.description {
            var annotations = layers[index]["annotations"] as? [String: String] ?? [:]
            annotations[LazyLayerOrigin.tocDigestLabel] = toc.description
            layers[index]["annotations"] = annotations
        }
        json["layers"] = layers
        let file = scratch.sub("tampered.json")
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: file))
        let pushed = try await curl(
            "http://\(proxy.host)/v2/demo/manifests/tampered", headers: ["Content-Type: application/vnd.oci.image.manifest.v1+json"], method: "PUT",
            extra: ["--data-binary", "@\(file)"])
        try #require(pushed.status == 201, "push: \(pushed.status)")
        return "\(proxy.host)/demo:tampered"
    }
}
