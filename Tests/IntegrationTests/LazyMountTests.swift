import ContentStore
import EStargz
import Foundation
import Images
import LazyFS
import OCI
import Slipway
import Testing
import TestSupport

let fuseAvailable = FileManager.default.fileExists(atPath: "/dev/fuse") && geteuid() == 0

/// `slipway mount` against a real registry: the mounted tree equals the unpacked image, chunks are shared across
/// versions, failures surface as EIO without killing the mount, and `umount` cleans up even after a crash.
@Suite(.tags(.integration, .slow), .enabled(if: fuseAvailable, "needs /dev/fuse and root"), .serialized)
struct LazyMountTests {
    struct Mounted {
        let directory: String
        let store: String

        func status() async throws -> MountState {
            let result = try await run(slipwayBinary, ["status", "--json", "--store", store, directory])
            try #require(result.status == 0, "status: \(result.stderr)")
            return try JSONDecoder().decode(MountState.self, from: Data(result.stdout.utf8))
        }

        /// Unmounts and waits for the mount's process to end: `umount` waits at most 10 s for it, and on a loaded
        /// node the process may still hold the store (for `gc`) after that.
        @discardableResult
        func unmountAndWaitForItsProcess() async throws -> MountState? {
            let pid = try await status().pid
            let final = try await unmount()
            try await waitUntil("the mount process \(pid) ended") { kill(pid, 0) != 0 || LazyMountTests.hasExited(pid) }
            return final
        }

        @discardableResult
        func unmount() async throws -> MountState? {
            let result = try await run(slipwayBinary, ["umount", "--json", "--store", store, directory])
            #expect(result.status == 0, "umount: \(result.stderr)")
            return try? JSONDecoder().decode(MountState.self, from: Data(result.stdout.utf8))
        }
    }

    func mount(_ reference: String, _ scratch: ScratchDirectory, name: String, store: String, options: [String] = []) async throws -> Mounted {
        let directory = scratch.sub("mnt-\(name)")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let result = try await run(slipwayBinary, ["mount", "-q", "--store", store] + options + [reference, directory])
        try #require(result.status == 0, "mount: \(result.stderr)")
        return Mounted(directory: directory, store: store)
    }

    /// The demo image in the registry as it is (`v1`) and converted to eStargz (`v1-esgz`).
    func publish(_ host: String, _ scratch: ScratchDirectory, version: String = "1") async throws -> (plain: String, lazy: String) {
        let layout = try makeDemoLayout(scratch, largeFileBytes: 6 << 20, version: version)
        let plain = "\(host)/demo:v\(version)"
        let lazy = "\(host)/demo:v\(version)-esgz"
        #expect(try await run(slipwayBinary, ["copy", "-q", "oci:\(layout.root):demo", plain]).status == 0)
        let converted = try await run(slipwayBinary, ["convert", "-q", "--chunk-size", "1048576", "--store", scratch.sub("convert-store"), plain, lazy])
        try #require(converted.status == 0, "convert: \(converted.stderr)")
        return (plain, lazy)
    }

    @Test func mountedTreeEqualsTheUnpackedImage() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let (plain, lazy) = try await publish(registry.host, scratch)
            #expect(try await run(slipwayBinary, ["unpack", "-q", "--store", scratch.sub("unpack-store"), plain, scratch.sub("rootfs")]).status == 0)
            let expected = try describeTree(scratch.sub("rootfs"))
            #expect(expected.count > 20)

            // eStargz: served lazily, with nothing prefetched, so every read below goes through the chunk fetcher.
            let mounted = try await mount(lazy, scratch, name: "lazy", store: scratch.sub("store"), options: ["--prefetch", "none"])
            let before = try await mounted.status()
            #expect(before.lazyLayers == 3 && before.wholeLayers == 0)
            #expect(before.statistics.chunksFetched == 0)
            let tree = try describeTree(mounted.directory)
            #expect(Set(tree.keys) == Set(expected.keys))
            for (path, entry) in expected where tree[path] != entry {
                Issue.record("\(path): unpacked \(entry) vs mounted \(tree[path].map(\.description) ?? "missing")")
            }
            let after = try await mounted.status()
            #expect(after.statistics.chunksFetched >= 6)  // the 6 MiB asset alone is six 1 MiB chunks
            #expect(after.statistics.failedReads == 0)
            let final = try await #require(try mounted.unmount())
            #expect(final.statistics.bytesFetched >= after.statistics.bytesFetched)
            #expect(try FileManager.default.contentsOfDirectory(atPath: mounted.directory).isEmpty)

            // Not eStargz: the layers are fetched whole before the mount appears; the tree is the same.
            let whole = try await mount(plain, scratch, name: "plain", store: scratch.sub("store"))
            await #expect(try whole.status().wholeLayers == 3)
            #expect(try describeTree(whole.directory) == expected)
            // The mount serves extracted layers from the store: gc must not run under it.
            let collected = try await run(slipwayBinary, ["gc", "--store", whole.store])
            #expect(collected.status == 1, "gc ran while mounted: \(collected.stdout)")
            try await whole.unmountAndWaitForItsProcess()
            let afterUnmount = try await run(slipwayBinary, ["gc", "-q", "--store", whole.store])
            #expect(afterUnmount.status == 0, "gc after the unmount: \(afterUnmount.stderr)")
        }
    }

    @Test func theDefaultPrefetchBringsTheWholeImage() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let (_, lazy) = try await publish(registry.host, scratch)
            let mounted = try await mount(lazy, scratch, name: "prefetch", store: scratch.sub("store"))
            var state = try await mounted.status()
            let deadline = ContinuousClock.now + .seconds(30)
            while !state.statistics.prefetchFinished, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
                state = try await mounted.status()
            }
            #expect(state.statistics.prefetchFinished)
            #expect(state.statistics.prefetchTotal > 6 << 20 && state.statistics.prefetchDone == state.statistics.prefetchTotal)
            // Everything is local now: reading the whole tree fetches nothing more.
            _ = try describeTree(mounted.directory)
            let after = try await mounted.status().statistics
            #expect(after.bytesFetched == state.statistics.bytesFetched, "\(after)")
            #expect(after.blockingReads == 0 && after.cacheHits > 0)
            try await mounted.unmount()
        }
    }

    @Test func filesOnLocalDiskArePassedThroughToTheKernelAndStayTheImage() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let (plain, lazy) = try await publish(registry.host, scratch)
            #expect(try await run(slipwayBinary, ["unpack", "-q", "--store", scratch.sub("unpack-store"), plain, scratch.sub("rootfs")]).status == 0)
            let expected = try await describeTreeOffThePool(scratch.sub("rootfs"))
            let mounted = try await mount(lazy, scratch, name: "passthrough", store: scratch.sub("store"), options: ["--prefetch", "none"])
            let file = "\(mounted.directory)/etc/os-release"
            // Opened before its chunk is here: served through Slipway; a second open while the first is still open
            // must be served the same way (the kernel refuses an inode open both ways at once).
            let first = try #require(FileHandle(forReadingAtPath: file))
            let firstBytes = try first.readToEnd()
            let second = try #require(FileHandle(forReadingAtPath: file))
            #expect(try second.readToEnd() == firstBytes)
            #expect(try await mounted.status().statistics.passthroughOpens == 0)
            try first.close()
            try second.close()
            // Every open from now on finds the chunk cached and verified: the kernel reads the file itself. Two at
            // once share the inode's one backing file (the kernel refuses a second one).
            let third = try #require(FileHandle(forReadingAtPath: file))
            let fourth = try #require(FileHandle(forReadingAtPath: file))
            #expect(try third.readToEnd() == firstBytes)
            #expect(try fourth.readToEnd() == firstBytes)
            try third.close()
            try fourth.close()
            #expect(try await mounted.status().statistics.passthroughOpens == 2)
            // Whatever path each file takes (passed through, served from the cache, fetched), the tree is the image.
            let tree = try await describeTreeOffThePool(mounted.directory)
            #expect(try await describeTreeOffThePool(mounted.directory) == tree)
            for (path, entry) in expected where tree[path] != entry {
                Issue.record("\(path): unpacked \(entry) vs mounted \(tree[path].map(\.description) ?? "missing")")
            }
            #expect(try await mounted.status().statistics.passthroughOpens > 1)
            try await mounted.unmount()
        }
    }

    @Test func aLazyMountWorksThroughAColdPullThroughCache() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let (plain, lazy) = try await publish(registry.host, scratch)
            #expect(try await run(slipwayBinary, ["unpack", "-q", "--store", scratch.sub("unpack-store"), plain, scratch.sub("rootfs")]).status == 0)
            let expected = try describeTree(scratch.sub("rootfs"))
            try await withCache(upstream: registry.url.absoluteString, root: scratch.sub("cache")) { cache in
                // Nothing cached: the footer and TOC reads are Range requests on cold blobs.
                let viaCache = lazy.replacingOccurrences(of: registry.host, with: cache.host)
                let mounted = try await mount(viaCache, scratch, name: "via-cache", store: scratch.sub("store"), options: ["--prefetch", "none"])
                #expect(try describeTree(mounted.directory) == expected)
                await #expect(try mounted.status().statistics.failedReads == 0)
                try await mounted.unmount()
                let ranges = try cache.accessLog().filter { $0["status"] as? Int == 206 }
                #expect(!ranges.isEmpty, "the mount made no Range request through the cache")
                #expect(ranges.contains { $0["cache"] as? String != "hit" }, "no Range was answered on a cold blob")
            }
        }
    }

    @Test func aPatchReleaseFetchesOnlyWhatChanged() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let (_, v1) = try await publish(registry.host, scratch, version: "1")
            let (_, v2) = try await publish(registry.host, scratch, version: "2")
            let store = scratch.sub("store")
            let first = try await mount(v1, scratch, name: "v1", store: store, options: ["--prefetch", "none"])
            _ = try describeTree(first.directory)
            let v1Fetched = try await first.status().statistics.bytesFetched
            try await first.unmount()
            #expect(v1Fetched > 6 << 20)

            let second = try await mount(v2, scratch, name: "v2", store: store, options: ["--prefetch", "none"])
            let tree = try describeTree(second.directory)
            #expect(try String(contentsOfFile: second.directory + "/version.txt", encoding: .utf8) == "version 2\n")
            #expect(tree["opt/app/data.bin"]?.size == 6 << 20)
            let statistics = try await #require(try second.unmount()).statistics
            // Unchanged layers cost nothing (their TOCs and chunks are cached); the changed one costs its TOC
            // and the chunks that differ.
            #expect(statistics.bytesFetched - statistics.tocBytesFetched <= 8 << 10, "\(statistics)")
            #expect(statistics.bytesFetched <= 80 << 10, "\(statistics)")
            #expect(statistics.cacheHits > 0)
        }
    }

    @Test func registryFailuresBecomeEIOAndTheMountSurvives() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { _, proxy in
            let (_, lazy) = try await publish(proxy.host, scratch)
            let image = try await withSession(try makeSession()) { session in
                try await session.source(for: try ImageLocation(parsing: lazy)).resolve()
            }
            let large = try #require(image.manifest.layers.max { $0.size < $1.size })
            let mounted = try await mount(
                lazy, scratch, name: "faults", store: scratch.sub("store"), options: ["--prefetch", "none", "--fetch-timeout", "2"])
            let runScript = mounted.directory + "/opt/app/run.sh"
            let cached = try #require(FileManager.default.contents(atPath: runScript))

            // The registry stops answering: a read of data not cached fails within the timeout, with EIO.
            proxy.inject(.status(503), path: "/blobs/\(large.digest)", times: .max)
            let started = ContinuousClock.now
            let failed = try readFile(mounted.directory + "/opt/app/data.bin")
            #expect(failed.errno == EIO)
            #expect(ContinuousClock.now - started < .seconds(10))
            // A registry that accepts the request and then goes silent: the same bound holds.
            proxy.removeAllRules()
            proxy.inject(.stall(seconds: 60), path: "/blobs/\(large.digest)", times: .max)
            let stalled = ContinuousClock.now
            #expect(try readFile(mounted.directory + "/opt/app/data.bin").errno == EIO)
            #expect(ContinuousClock.now - stalled < .seconds(10))
            // What was cached stays readable, and the daemon still answers.
            #expect(FileManager.default.contents(atPath: runScript) == cached)
            await #expect(try mounted.status().statistics.failedReads >= 1)

            // Wrong bytes for a range: the chunk is rejected (EIO) and not cached.
            proxy.removeAllRules()
            proxy.inject(.flipByte(at: 100), path: "/blobs/\(large.digest)", times: .max)
            let chunksBefore = try await mounted.status().statistics.chunksFetched
            #expect(try readFile(mounted.directory + "/opt/app/data.bin").errno == EIO)
            await #expect(try mounted.status().statistics.chunksFetched == chunksBefore)

            // The registry is back: the same read now succeeds.
            proxy.removeAllRules()
            let recovered = try readFile(mounted.directory + "/opt/app/data.bin")
            #expect(recovered.errno == 0 && recovered.bytes == 6 << 20)
            try await mounted.unmount()
        }
    }

    /// Whether `pid` has ended: gone, or a zombie not reaped yet (its descriptors are closed either way).
    static func hasExited(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let name = stat.lastIndex(of: ")") else { return true }
        // "PID (COMMAND) STATE ...", where COMMAND may hold spaces and parentheses.
        return stat[stat.index(after: name)...].drop { $0 == " " }.first == "Z"
    }

    @Test func recordsAccessesAndCleansUpAfterACrash() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let (_, lazy) = try await publish(registry.host, scratch)
            let record = scratch.sub("accessed.txt")
            let mounted = try await mount(lazy, scratch, name: "record", store: scratch.sub("store"), options: ["--record", record])
            _ = FileManager.default.contents(atPath: mounted.directory + "/opt/app/run.sh")
            _ = FileManager.default.contents(atPath: mounted.directory + "/etc/os-release")
            _ = FileManager.default.contents(atPath: mounted.directory + "/opt/app/run.sh")
            try await mounted.unmount()
            #expect(try String(contentsOfFile: record, encoding: .utf8) == "opt/app/run.sh\netc/os-release\n")

            // A daemon killed with SIGKILL leaves a dead mount; umount removes it.
            let crashed = try await mount(lazy, scratch, name: "crash", store: scratch.sub("store"))
            let daemon = try await crashed.status().pid
            kill(daemon, SIGKILL)
            // The mount is dead once its daemon has exited: its /dev/fuse descriptor closed with it.
            try await waitUntil("the killed mount daemon \(daemon) has exited") { Self.hasExited(daemon) }
            var info = stat()
            #expect(stat(crashed.directory + "/etc", &info) != 0)
            let cleaned = try await run(slipwayBinary, ["umount", "--store", crashed.store, crashed.directory])
            #expect(cleaned.status == 0, "\(cleaned.stderr)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: crashed.directory).isEmpty)
        }
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/go"), "needs golang-go and the reference eStargz package"))
    func imagesConvertedByTheReferenceMount() async throws {
        let scratch = try ScratchDirectory()
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let converter = scratch.sub("estargz-reference")
        let built = try await run(
            "/usr/bin/go", ["build", "-o", converter, "\(repository)/bench/estargz-reference/main.go"],
            environment: ["GO111MODULE": "off", "GOPATH": "/usr/share/gocode", "GOCACHE": scratch.sub("gocache"), "GOFLAGS": ""])
        try #require(built.status == 0, "go build: \(built.stderr)")

        // The demo image with every layer rewritten by estargz.Build.
        let original = try makeDemoLayout(scratch, largeFileBytes: 3 << 20)
        let image = try await LayoutImageSource(store: original, imageName: "demo").resolve()
        let converted = try ContentStore(root: scratch.sub("reference-layout"))
        var layers: [Descriptor] = []
        var diffIDs: [Digest] = []
        for (index, layer) in image.manifest.layers.enumerated() {
            let output = scratch.sub("layer-\(index).esgz")
            let result = try await run(converter, ["-in", original.blobPath(layer.digest), "-out", output, "-chunk-size", "1048576", "-level", "6"])
            try #require(result.status == 0, "estargz.Build: \(result.stderr)")
            struct Built: Decodable { var toc_digest: String; var diff_id: String }
            let fields = try JSONDecoder().decode(Built.self, from: Data(result.stdout.utf8))
            var descriptor = try converted.writeBlob(Array(try Data(contentsOf: URL(fileURLWithPath: output))), mediaType: MediaType.ociLayerGzip)
            descriptor.annotations = [tocDigestAnnotation: fields.toc_digest]
            layers.append(descriptor)
            diffIDs.append(try Digest(fields.diff_id))
        }
        let config = try converted.writeBlob(
            Array(try JSONEncoder.canonical.encode(ImageConfig(platform: .host, config: nil, diffIDs: diffIDs))), mediaType: MediaType.ociConfig)
        let manifest = try converted.writeBlob(
            Array(try JSONEncoder.canonical.encode(Manifest(config: config, layers: layers))), mediaType: MediaType.ociManifest)
        try converted.setImage(named: "ref", to: manifest)

        try await RegistryProcess.withRegistry { registry in
            let reference = "\(registry.host)/demo:reference-esgz"
            #expect(try await run(slipwayBinary, ["copy", "-q", "oci:\(converted.root):ref", reference]).status == 0)
            #expect(try await run(slipwayBinary, ["unpack", "-q", "--store", scratch.sub("unpack-store"), "oci:\(original.root):demo", scratch.sub("rootfs")]).status == 0)
            let mounted = try await mount(reference, scratch, name: "reference", store: scratch.sub("store"), options: ["--prefetch", "none"])
            await #expect(try mounted.status().lazyLayers == 3)
            let expected = try describeTree(scratch.sub("rootfs"))
            let tree = try describeTree(mounted.directory)
            #expect(Set(tree.keys) == Set(expected.keys))
            for (path, entry) in expected where tree[path] != entry {
                Issue.record("\(path): unpacked \(entry) vs mounted \(tree[path].map(\.description) ?? "missing")")
            }
            try await mounted.unmount()
        }
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/bin/busybox"), "needs busybox-static"))
    func aWorkloadRunsInTheMount() async throws {
        let scratch = try ScratchDirectory()
        let root = scratch.sub("root")
        try FileManager.default.createDirectory(atPath: root + "/bin", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: root + "/bin/busybox")
        try FileManager.default.createSymbolicLink(atPath: root + "/bin/sh", withDestinationPath: "busybox")
        try Data("line one\nline two\n".utf8).write(to: URL(fileURLWithPath: root + "/input.txt"))
        #expect(try await run("tar", ["-cf", scratch.sub("layer.tar"), "-C", root, "."]).status == 0)
        let layout = scratch.sub("layout")
        #expect(try await run(slipwayBinary, ["assemble", "-q", "oci:\(layout):tools", "--layer", scratch.sub("layer.tar")]).status == 0)
        try await RegistryProcess.withRegistry { registry in
            let plain = "\(registry.host)/tools:1"
            let lazy = "\(registry.host)/tools:1-esgz"
            #expect(try await run(slipwayBinary, ["copy", "-q", "oci:\(layout):tools", plain]).status == 0)
            #expect(try await run(slipwayBinary, ["convert", "-q", "--store", scratch.sub("convert-store"), plain, lazy]).status == 0)
            let mounted = try await mount(lazy, scratch, name: "tools", store: scratch.sub("store"), options: ["--prefetch", "none"])
            // The image's own shell runs from the mount: the binary's pages come through the chunk fetcher.
            let result = try await run("/usr/sbin/chroot", [mounted.directory, "/bin/sh", "-c", "busybox wc -l /input.txt; busybox sha256sum /bin/busybox"])
            #expect(result.status == 0, "\(result.stderr)")
            let expectedHash = Digest.sha256(of: Array(try Data(contentsOf: URL(fileURLWithPath: "/bin/busybox")))).hex
            #expect(result.stdout.contains("2 /input.txt") && result.stdout.contains(expectedHash), "\(result.stdout)")
            await #expect(try mounted.status().statistics.chunksFetched >= 1)
            try await mounted.unmount()
        }
    }
}
