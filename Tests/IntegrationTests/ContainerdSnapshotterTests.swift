import Foundation
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// `slipway snapshotter` as Debian's containerd uses it, through a `proxy_plugins` entry: containerd pulls and runs
/// images from its snapshots (two at once too), the snapshots survive the snapshotter being killed, containerd's
/// garbage collection leaves nothing behind, and layers Slipway's store has extracted already are neither
/// downloaded nor extracted.
@Suite(.tags(.integration, .slow), .enabled(if: containerdAvailable, "needs root and Debian's containerd"), .serialized)
struct ContainerdSnapshotterTests {
    /// A `slipway snapshotter` process serving a socket in the scratch directory.
    struct SnapshotterProcess: Sendable {
        let socket: String
        let process: ChildProcess

        static func start(_ scratch: ScratchDirectory, store: String, options: [String] = []) async throws -> SnapshotterProcess {
            let socket = scratch.sub("slipway-snapshotter.sock")
            let process = try ChildProcess(slipwayBinary, ["snapshotter", "--address", socket, "--store", store] + options)
            try await waitUntil("the snapshotter serves \(socket)") {
                if let status = process.endedStatus { throw TestSupportError("slipway snapshotter exited \(status): \(process.standardErrorSoFar)") }
                return process.standardErrorSoFar.contains("serving on")
            }
            return SnapshotterProcess(socket: socket, process: process)
        }

        /// Stops it as a service manager would (SIGTERM) and returns its exit status.
        @discardableResult
        func stop() async -> Int32 {
            process.signal(SIGTERM)
            return await process.exitStatus()
        }
    }

    static func containerdConfiguration(_ socket: String) -> String {
        """
        [proxy_plugins.slipway]
          type = "snapshot"
          address = "\(socket)"
        """
    }

    /// What the tools image's shell prints: a file of its top layer, the opaque directory's only file, and a file the
    /// top layer deleted (a whiteout), absent.
    /// A failing read makes the probe fail (with the reader's message on stderr), not print less.
    static let probe = "set -e; cat /version.txt; ls /opq; if test -e /etc/gone.txt; then echo present; else echo gone; fi"
    static let probeOutput = "tools 1\nnew.txt\ngone\n"

    @Test func containerdPullsAndRunsFromSlipwaysSnapshotsAcrossAKill() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let reference = "\(registry.host)/tools:v1"
            try await runChecked(slipwayBinary, ["copy", "-q", "oci:\(try await makeToolsLayout(scratch)):tools", reference])
            let sibling = try await pushSibling(of: scratch, to: "\(registry.host)/tools:v2")
            let store = scratch.sub("store")
            var snapshotter = try await SnapshotterProcess.start(scratch, store: store)
            defer { _ = snapshotter.process.signal(SIGKILL) }
            try await withStopped(
                try await Containerd.start(scratch, configuration: Self.containerdConfiguration(snapshotter.socket)), stop: { await $0.stop() }
            ) { containerd in
                let namespace = ["-n", "slipway-test"]
                try await checked(containerd.ctr(namespace + ["image", "pull", "--plain-http", "--snapshotter", "slipway", reference]))
                let firstOutput = try await runProbe(containerd, reference, name: "first", scratch: scratch)
                #expect(firstOutput == Self.probeOutput)

                let listed = try await checked(containerd.ctr(namespace + ["snapshots", "--snapshotter", "slipway", "ls"]))
                #expect(listed.stdout.components(separatedBy: "Committed").count - 1 == 2, "one committed snapshot per layer: \(listed.stdout)")

                // A second image on the same base layer: only its own top layer is extracted.
                // (Set differences: the finished container's snapshot may go meanwhile.)
                let trees = { Set(try FileManager.default.contentsOfDirectory(atPath: "\(store)/snapshotter/snapshots")) }
                let treesBefore = try trees()
                try await checked(containerd.ctr(namespace + ["image", "pull", "--plain-http", "--snapshotter", "slipway", sibling]))
                #expect(try trees().subtracting(treesBefore).count == 1, "the shared base layer was extracted again")
                let siblingOutput = try await runCapturing(containerd, sibling, name: "sibling", script: "cat /version.txt", scratch: scratch)
                #expect(siblingOutput == "tools 2\n")
                try await checked(containerd.ctr(namespace + ["image", "rm", "--sync", sibling]))

                // Killed, not stopped: its socket file stays behind, and the next one takes it over.
                snapshotter.process.signal(SIGKILL)
                _ = await snapshotter.process.exitStatus()
                // A directory a crash left before the metadata named it goes when the next one starts (with any the
                // kill itself left: a snapshot containerd had just removed may still have had its directory).
                let leftover = "\(store)/snapshotter/snapshots/999"
                try FileManager.default.createDirectory(atPath: leftover + "/fs", withIntermediateDirectories: true)
                snapshotter = try await SnapshotterProcess.start(scratch, store: store)
                #expect(!FileManager.default.fileExists(atPath: leftover))
                #expect(snapshotter.process.standardErrorSoFar.contains("unnamed snapshot directories"))
                // containerd reconnects within its gRPC backoff; requests until then fail as "unavailable".
                try await waitUntil("containerd reaches the new snapshotter") {
                    try await containerd.ctr(namespace + ["snapshots", "--snapshotter", "slipway", "ls"]).status == 0
                }
                let secondOutput = try await runProbe(containerd, reference, name: "second", scratch: scratch)
                #expect(secondOutput == Self.probeOutput, "the snapshots survived the restart")

                // Two pulls of one image at once, in two namespaces: each gets its own snapshots, both run.
                async let first = containerd.ctr(["-n", "team-a", "image", "pull", "--plain-http", "--snapshotter", "slipway", reference])
                async let second = containerd.ctr(["-n", "team-b", "image", "pull", "--plain-http", "--snapshotter", "slipway", reference])
                let (pulledA, pulledB) = try await (first, second)
                try checked(pulledA)
                try checked(pulledB)
                for team in ["team-a", "team-b"] {
                    let teamOutput = try await runProbe(containerd, reference, name: team, namespace: team, scratch: scratch)
                    #expect(teamOutput == Self.probeOutput, "\(team)")
                    try await checked(containerd.ctr(["-n", team, "image", "rm", "--sync", reference]))
                }

                // Removing the image lets containerd's garbage collector remove every snapshot, through the plugin.
                try await checked(containerd.ctr(namespace + ["image", "rm", "--sync", reference]))
                try await waitUntil("the snapshotter holds no snapshot") {
                    (try FileManager.default.contentsOfDirectory(atPath: "\(store)/snapshotter/snapshots")).isEmpty
                }
            }
            #expect(await snapshotter.stop() == 0)
            #expect(!FileManager.default.fileExists(atPath: snapshotter.socket), "the socket goes with the server")
        }
    }

    /// A pull that labels each layer with its chainID (the CRI plugin's, or `ctr-remote image rpull`'s) skips the
    /// layers `slipway pull --unpack-layers` extracted: no blob request reaches the registry, and the container runs
    /// on the store's own layer directories.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/ctr-remote"), "needs ctr-remote (stargz-snapshotter)"))
    func layersTheStoreExtractedAreNeitherDownloadedNorExtractedAgain() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let reference = "\(proxy.host)/tools:v1"
            try await runChecked(slipwayBinary, ["copy", "-q", "oci:\(try await makeToolsLayout(scratch)):tools", "\(registry.host)/tools:v1"])
            let store = scratch.sub("store")
            try await runChecked(slipwayBinary, ["pull", "-q", "--unpack-layers", "--store", store, reference])
            let inspected = try await runChecked(slipwayBinary, ["inspect", "--json", reference])
            let layers = try #require(
                (try JSONSerialization.jsonObject(with: Data(inspected.stdout.utf8)) as? [String: Any])?["layers"] as? [[String: Any]])
            let layerDigests = layers.compactMap { $0["digest"] as? String }
            try #require(layerDigests.count == 2)
            func layerDownloads() -> Int { layerBlobGETs(proxy).filter { request in layerDigests.contains { request.uri.contains($0) } }.count }
            let snapshotter = try await SnapshotterProcess.start(scratch, store: store)
            defer { _ = snapshotter.process.signal(SIGKILL) }
            try await withStopped(
                try await Containerd.start(scratch, configuration: Self.containerdConfiguration(snapshotter.socket)), stop: { await $0.stop() }
            ) { containerd in
                let downloadsBefore = layerDownloads()
                try await remotePull(containerd, reference)
                #expect(layerDownloads() == downloadsBefore, "no layer was downloaded")
                let trees = try FileManager.default.contentsOfDirectory(atPath: "\(store)/snapshotter/snapshots")
                #expect(trees.isEmpty, "no layer was extracted into the snapshotter: \(trees)")
                let reusedOutput = try await runProbe(containerd, reference, name: "reused", scratch: scratch)
                #expect(reusedOutput == Self.probeOutput)
            }
            #expect(await snapshotter.stop() == 0)
        }
    }

    /// `slipway prefetch --snapshotter SOCKET` (what the prefetch DaemonSet runs) warms the node through the
    /// snapshotter alone: the image's layers are extracted into the snapshotter's store, so containerd's next pull
    /// moves no layer and mounts nothing lazily, even for an eStargz image.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/ctr-remote"), "needs ctr-remote (stargz-snapshotter)"))
    func prefetchThroughTheSnapshotterWarmsTheNode() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let reference = try await Self.publishToolsAsEStargz(registry, proxy: proxy, scratch)
            let layers = try await layerDescriptors(reference)
            let store = scratch.sub("store")
            let snapshotter = try await SnapshotterProcess.start(scratch, store: store)
            defer { _ = snapshotter.process.signal(SIGKILL) }

            // The prefetching client has no store of its own: an empty --store shows it stays empty.
            let client = scratch.sub("client-store")
            let prefetched = try await runChecked(slipwayBinary, ["prefetch", "--json", "--store", client, "--snapshotter", snapshotter.socket, reference])
            let result = try #require(try JSONSerialization.jsonObject(with: Data(prefetched.stdout.utf8)) as? [String: Any])
            #expect(result["layers"] as? Int == 2 && result["layersExtracted"] as? Int == 2, "\(result)")
            #expect(!FileManager.default.fileExists(atPath: "\(client)/blobs"))
            // A reference the snapshotter cannot pull is the client's error, with the reason.
            let refused = try await run(slipwayBinary, ["prefetch", "-q", "--snapshotter", snapshotter.socket, "\(proxy.host)/nothing:here"])
            #expect(refused.status != 0 && refused.stderr.contains("nothing"), "\(refused.stderr)")
            // Whoever reaches the socket names an image, never a path on the node.
            let local = try await run(slipwayBinary, ["prefetch", "-q", "--snapshotter", snapshotter.socket, "oci:/etc"])
            #expect(local.status != 0 && local.stderr.contains("registry images only"), "\(local.stderr)")

            try await withStopped(
                try await Containerd.start(scratch, configuration: Self.containerdConfiguration(snapshotter.socket)), stop: { await $0.stop() }
            ) { containerd in
                let readBefore = layerBlobGETs(proxy).count
                try await remotePull(containerd, reference)
                let read = layerBlobGETs(proxy).dropFirst(readBefore).filter { request in layers.contains { request.uri.contains($0.digest) } }
                #expect(read.isEmpty, "the pull read layers: \(read)")
                #expect((try? FileManager.default.contentsOfDirectory(atPath: "\(store)/snapshotter/lazy"))?.isEmpty ?? true, "nothing is mounted lazily")
                let warmOutput = try await runProbe(containerd, reference, name: "warm", scratch: scratch)
                #expect(warmOutput == Self.probeOutput)
            }
            #expect(await snapshotter.stop() == 0)
        }
    }

    /// `ctr-remote image rpull` of an eStargz image labels each layer with the image, and the snapshotter mounts the
    /// layers lazily: the pull moves only the TOCs, the container reads its files through the mounts (overlayfs over
    /// FUSE lowers, whiteouts and opaque directories as overlayfs reads them), a mount whose process died is
    /// mounted again before containerd gets the mounts, the mounts outlive a killed snapshotter, and containerd's
    /// garbage collection leaves no mount, directory or process behind.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/ctr-remote"), "needs ctr-remote (stargz-snapshotter)"))
    func eStargzLayersAreMountedLazily() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let reference = try await Self.publishToolsAsEStargz(registry, proxy: proxy, scratch)
            let layers = try await layerDescriptors(reference)
            try #require(layers.count == 2)
            let readBefore = layerBlobGETs(proxy).count
            func layerReads() -> [LoggedRequest] {
                layerBlobGETs(proxy).dropFirst(readBefore).filter { request in layers.contains { request.uri.contains($0.digest) } }
            }
            let store = scratch.sub("store")
            let lazyRoot = "\(store)/snapshotter/lazy"
            var snapshotter = try await SnapshotterProcess.start(scratch, store: store, options: ["--prefetch", "none"])
            defer { _ = snapshotter.process.signal(SIGKILL) }
            try await withStopped(
                try await Containerd.start(scratch, configuration: Self.containerdConfiguration(snapshotter.socket)), stop: { await $0.stop() }
            ) { containerd in
                let namespace = ["-n", "slipway-test"]
                try await remotePull(containerd, reference)
                let pulled = layerReads()
                #expect(pulled.allSatisfy { $0.range != nil }, "only ranges of the layers were read: \(pulled)")
                let pulledBytes = pulled.reduce(0) { $0 + $1.responseBodyBytes }
                let layerBytes = layers.reduce(0) { $0 + $1.size }
                #expect(pulledBytes > 0 && pulledBytes < layerBytes / 4, "the pull moved \(pulledBytes) of the layers' \(layerBytes) bytes")
                let mounts = try FileManager.default.contentsOfDirectory(atPath: lazyRoot)
                #expect(mounts.count == 2, "one lazy mount per layer: \(mounts)")
                #expect(try FileManager.default.contentsOfDirectory(atPath: "\(store)/snapshotter/snapshots").isEmpty, "no layer was extracted")

                let lazyOutput = try await runProbe(containerd, reference, name: "lazy", scratch: scratch)
                #expect(lazyOutput == Self.probeOutput)
                #expect(layerReads().allSatisfy { $0.range != nil }, "the run read ranges, never a whole layer")

                // A mount process that died is mounted again before containerd gets a container's mounts.
                let top = "\(lazyRoot)/sha256-\(layers[1].digest.dropFirst(7))"
                let killed = try #require(mountProcess(serving: top))
                kill(killed, SIGKILL)
                try await waitUntil("the mount process \(killed) is gone") { kill(killed, 0) != 0 }
                let revivedOutput = try await runProbe(containerd, reference, name: "revived", scratch: scratch)
                #expect(revivedOutput == Self.probeOutput)
                let replacement = try #require(mountProcess(serving: top))
                #expect(replacement != killed)

                // The mounts outlive a killed snapshotter, and the next one uses them.
                snapshotter.process.signal(SIGKILL)
                _ = await snapshotter.process.exitStatus()
                #expect(mountProcess(serving: top) == replacement)
                snapshotter = try await SnapshotterProcess.start(scratch, store: store, options: ["--prefetch", "none"])
                try await waitUntil("containerd reaches the new snapshotter") {
                    try await containerd.ctr(namespace + ["snapshots", "--snapshotter", "slipway", "ls"]).status == 0
                }
                let againOutput = try await runProbe(containerd, reference, name: "again", scratch: scratch)
                #expect(againOutput == Self.probeOutput)
                #expect(mountProcess(serving: top) == replacement)

                // Removing the image removes every snapshot, and with the last one each mount and its process.
                try await checked(containerd.ctr(namespace + ["image", "rm", "--sync", reference]))
                try await waitUntil("the lazy mounts are gone") { (try? FileManager.default.contentsOfDirectory(atPath: lazyRoot))?.isEmpty ?? true }
                #expect(mountProcess(serving: top) == nil)
            }
            #expect(await snapshotter.stop() == 0)
        }
    }

    /// A plain gzip image nobody converted, with a gzip index pushed next to it (`slipway index --push`), is
    /// mounted lazily layer by layer like an eStargz one: the pull moves no layer byte, the container reads its
    /// files through ranges; the same image without an index is snapshotted the ordinary way.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/ctr-remote"), "needs ctr-remote (stargz-snapshotter)"))
    func plainLayersWithAGzipIndexAreMountedLazily() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let layout = try await makeToolsLayout(scratch)
            try await runChecked(slipwayBinary, ["copy", "-q", "oci:\(layout):tools", "\(registry.host)/tools:v1"])
            try await runChecked(slipwayBinary, ["copy", "-q", "oci:\(layout):tools", "\(registry.host)/unindexed:v1"])
            try await runChecked(slipwayBinary, ["index", "-q", "--push", "--store", scratch.sub("indexer"), "\(registry.host)/tools:v1"])
            let reference = "\(proxy.host)/tools:v1"
            let layers = try await layerDescriptors(reference)
            let readBefore = layerBlobGETs(proxy).count
            func layerReads() -> [LoggedRequest] {
                layerBlobGETs(proxy).dropFirst(readBefore).filter { request in layers.contains { request.uri.contains($0.digest) } }
            }
            let store = scratch.sub("store")
            let snapshotter = try await SnapshotterProcess.start(scratch, store: store, options: ["--prefetch", "none"])
            defer { _ = snapshotter.process.signal(SIGKILL) }
            try await withStopped(
                try await Containerd.start(scratch, configuration: Self.containerdConfiguration(snapshotter.socket)), stop: { await $0.stop() }
            ) { containerd in
                try await remotePull(containerd, reference)
                #expect(layerReads().isEmpty, "the pull read layers: \(layerReads())")
                let mounts = try FileManager.default.contentsOfDirectory(atPath: "\(store)/snapshotter/lazy")
                #expect(mounts.count == 2, "one lazy mount per layer: \(mounts)")
                let output = try await runProbe(containerd, reference, name: "indexed", scratch: scratch)
                #expect(output == Self.probeOutput)
                #expect(!layerReads().isEmpty && layerReads().allSatisfy { $0.range != nil }, "the run read ranges, never a whole layer")

                // Without an index, the layers are pulled and snapshotted as containerd would anyway.
                let unindexed = "\(proxy.host)/unindexed:v1"
                try await remotePull(containerd, unindexed)
                #expect(try await runProbe(containerd, unindexed, name: "unindexed", scratch: scratch) == Self.probeOutput)
                #expect(try FileManager.default.contentsOfDirectory(atPath: "\(store)/snapshotter/lazy").count == 2)
            }
            #expect(await snapshotter.stop() == 0)
        }
    }

    /// An image of the tools image's base layer and a top layer of its own (`/version.txt` says "tools 2").
    private func pushSibling(of scratch: ScratchDirectory, to reference: String) async throws -> String {
        let top = scratch.sub("sibling-top")
        try FileManager.default.createDirectory(atPath: top, withIntermediateDirectories: true)
        try write("tools 2\n", to: "\(top)/version.txt")
        try await runChecked("tar", ["--numeric-owner", "--owner=0", "--group=0", "-cf", scratch.sub("sibling-top.tar"), "-C", top, "."])
        let layout = scratch.sub("sibling-layout")
        try await runChecked(
            slipwayBinary, ["assemble", "-q", "oci:\(layout):sibling", "--layer", scratch.sub("base.tar"), "--layer", scratch.sub("sibling-top.tar")])
        try await runChecked(slipwayBinary, ["copy", "-q", "oci:\(layout):sibling", reference])
        return reference
    }

    /// The `slipway mount` process serving `mountpoint`, if any.
    private func mountProcess(serving mountpoint: String) -> pid_t? {
        runningProcesses().first { $0.arguments.count > 2 && $0.arguments[1] == "mount" && $0.arguments.last == mountpoint }?.pid
    }

    /// The tools image in the registry, converted to eStargz as `tools:esgz`; the reference through the proxy.
    static func publishToolsAsEStargz(_ registry: RegistryProcess, proxy: FaultProxy, _ scratch: ScratchDirectory) async throws -> String {
        try await runChecked(slipwayBinary, ["copy", "-q", "oci:\(try await makeToolsLayout(scratch)):tools", "\(registry.host)/tools:v1"])
        try await runChecked(slipwayBinary, ["convert", "-q", "--store", scratch.sub("convert-store"), "\(registry.host)/tools:v1", "\(registry.host)/tools:esgz"])
        return "\(proxy.host)/tools:esgz"
    }

    /// `ctr-remote image rpull` through the snapshotter: a pull that labels each layer, as the CRI plugin's does.
    private func remotePull(_ containerd: Containerd, _ reference: String) async throws {
        try await checked(
            run("ctr-remote", ["--address", containerd.socket, "-n", "slipway-test", "image", "rpull", "--plain-http", "--snapshotter", "slipway", reference]))
    }

    /// Runs the probe in a container of `reference` through the snapshotter; returns what it wrote.
    private func runProbe(
        _ containerd: Containerd, _ reference: String, name: String, namespace: String = "slipway-test", scratch: ScratchDirectory
    ) async throws -> String {
        try await runCapturing(containerd, reference, name: name, namespace: namespace, script: Self.probe, scratch: scratch)
    }

    /// Runs `script` (sh) in a container of `reference` through the snapshotter and returns its standard output,
    /// which goes to a host file bound into the container rather than through ctr: containerd can lose the last
    /// output of a process that exits at once (a race in its I/O copy), and this suite once read a probe short
    /// under load.
    private func runCapturing(
        _ containerd: Containerd, _ reference: String, name: String, namespace: String = "slipway-test", script: String,
        scratch: ScratchDirectory
    ) async throws -> String {
        let directory = scratch.sub("out-\(namespace)-\(name)")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try await checked(containerd.ctr([
            "-n", namespace, "run", "--rm", "--snapshotter", "slipway", "--mount", "type=bind,src=\(directory),dst=/out,options=rbind:rw",
            reference, name, "sh", "-c", "exec > /out/stdout; " + script,
        ]))
        return try String(contentsOfFile: "\(directory)/stdout", encoding: .utf8)
    }

    @discardableResult
    private func checked(_ result: ProcessResult) throws -> ProcessResult {
        guard result.status == 0 else { throw TestSupportError("exit \(result.status): \(result.stderr)") }
        return result
    }
}
