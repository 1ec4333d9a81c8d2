import ContentStore
import Foundation
import GzipIndex
import LazyFS
import OCI
import Testing
import TestSupport

/// Lazy mounts of images nobody converted: plain gzip layers served through a gzip index that `slipway serve
/// --index` built while the layers passed through the cache, or that `slipway index --push` published next to the
/// image in docker-registry (which has no Referrers API: the fallback tag).
@Suite(.tags(.integration, .slow), .enabled(if: fuseAvailable, "needs /dev/fuse and root"), .serialized)
struct GzipIndexMountTests {
    @Test func anImageThatPassedThroughTheCacheMountsLazilyOnTheNextNode() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let plain = try await publishDemo(registry.host, scratch)
            try await withCache(upstream: "http://\(registry.host)", root: scratch.sub("cache"), options: ["--index"]) { cache in
                let reference = "\(cache.host)/demo:v1"
                // Node 1 pulls the image as usual; the cache indexes its three gzip layers on the way through.
                try await runChecked(slipwayBinary, ["pull", "-q", "--store", scratch.sub("node1"), reference])
                try await waitUntil("the cache indexed the 3 layers") { try await cache.metric("slipway_cache_gzip_indexes_built_total") == 3 }
                #expect(try await cache.metric("slipway_cache_gzip_index_failures_total") == 0)
                // Clients without the Referrers API find the cache's artifact under the fallback tag.
                let manifest = try await curl("\(cache.url)/v2/demo/manifests/v1", headers: ["Accept: application/vnd.oci.image.manifest.v1+json"])
                let imageDigest = try #require(manifest.headers["docker-content-digest"])
                let tagged = try await curl(
                    "\(cache.url)/v2/demo/manifests/sha256-\(imageDigest.dropFirst("sha256:".count))", headers: ["Accept: application/vnd.oci.image.index.v1+json"])
                #expect(tagged.status == 200)
                let tagList = (try JSONSerialization.jsonObject(with: tagged.body) as? [String: Any])?["manifests"] as? [[String: Any]] ?? []
                #expect(tagList.map { $0["artifactType"] as? String } == [GzipIndex.artifactType], "\(tagList)")
                try await runChecked(slipwayBinary, ["unpack", "-q", "--store", scratch.sub("node1"), plain, scratch.sub("rootfs")])
                let expected = try describeTree(scratch.sub("rootfs"))

                // Node 2 mounts it through the cache with nothing prefetched: one small file costs a span, not the image.
                let logBefore = try cache.accessLog().count
                let mounted = try await mountImage(reference, at: scratch.sub("mnt"), store: scratch.sub("node2"), options: ["--prefetch", "none"])
                let state = try await mounted.status()
                #expect(state.lazyLayers == 3 && state.indexedLayers == 3 && state.wholeLayers == 0)
                #expect(try String(contentsOfFile: "\(mounted.directory)/etc/os-release", encoding: .utf8).contains("Slipway"))
                let served = try blobBytes(cache.accessLog().dropFirst(logBefore))
                let imageBytes = try await layerDescriptors(plain).reduce(0) { $0 + $1.size }
                #expect(served > 0 && served < imageBytes / 10, "\(served) bytes of a \(imageBytes)-byte image to read one file")

                // Every file read through the index equals the unpacked image.
                let tree = try describeTree(mounted.directory)
                #expect(Set(tree.keys) == Set(expected.keys))
                for (path, entry) in expected where tree[path] != entry {
                    Issue.record("\(path): unpacked \(entry) vs mounted \(tree[path].map(\.description) ?? "missing")")
                }
                #expect(try await mounted.status().statistics.failedReads == 0)
                // A span is fetched once for all the files in it, not once per file.
                let whole = try blobBytes(cache.accessLog().dropFirst(logBefore))
                #expect(whole <= imageBytes * 12 / 10, "reading every file moved \(whole) bytes of a \(imageBytes)-byte image")
                try await mounted.unmount()

                // With the default prefetch, every indexed layer is read whole in the background and verified.
                let verified = try await mountImage(reference, at: scratch.sub("mnt3"), store: scratch.sub("node3"))
                try await waitUntil("the 3 layers were verified") { try await verified.status().statistics.layersVerified == 3 }
                #expect(try await verified.status().statistics.layersRejected == 0)
                try await verified.unmount()
                // Mounted again on that node (a redeploy): verified before and all cached, nothing moves.
                let logBeforeAgain = try cache.accessLog().count
                let again = try await mountImage(reference, at: scratch.sub("mnt4"), store: scratch.sub("node3"))
                try await waitUntil("the 3 layers count as verified") { try await again.status().statistics.layersVerified == 3 }
                #expect(try describeTree(again.directory) == expected)
                #expect(try blobBytes(cache.accessLog().dropFirst(logBeforeAgain)) < 100_000, "only index blobs, if anything")
                try await again.unmount()

                // An index the image's owner pushed upstream (here with prioritized files) wins over the cache's own.
                let files = scratch.sub("prioritized.txt")
                try write("etc/os-release\n", to: files)
                let pushed = try await runChecked(
                    slipwayBinary, ["index", "--json", "--push", "--prioritize", files, "--store", scratch.sub("owner"), plain])
                let summary = try #require(try JSONSerialization.jsonObject(with: Data(pushed.stdout.utf8)) as? [String: Any])
                let owners = try #require(summary["artifact"] as? String)
                let subject = try #require(summary["image"] as? String)
                let listed = try await curl("http://\(cache.host)/v2/demo/referrers/\(subject)")
                let manifests = try #require((try JSONSerialization.jsonObject(with: listed.body) as? [String: Any])?["manifests"] as? [[String: Any]])
                #expect(manifests.compactMap { $0["digest"] as? String } == [owners], "\(manifests)")
                // Its prioritized files are fetched before anything is read: reading one then waits for nothing.
                let primed = try await mountImage(plain, at: scratch.sub("mnt5"), store: scratch.sub("node5"), options: ["--prefetch", "landmark"])
                try await waitUntil("the prioritized files are fetched") { try await primed.status().statistics.prefetchFinished }
                #expect(try String(contentsOfFile: "\(primed.directory)/etc/os-release", encoding: .utf8).contains("Slipway"))
                let primedState = try await primed.status().statistics
                #expect(primedState.prefetchTotal > 0 && primedState.blockingReads == 0, "\(primedState)")
                try await primed.unmount()
            }
        }
    }

    @Test func slipwayIndexPushPublishesThroughTheFallbackTagAndAMovedTagFallsBackToAFullPull() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let plain = try await publishDemo(registry.host, scratch)
            try await runChecked(slipwayBinary, ["index", "-q", "--push", "--store", scratch.sub("indexer"), plain])
            // The index stays in the indexer's store as long as the image does, and goes with it.
            let indexer = try ContentStore(root: scratch.sub("indexer"))
            try await runChecked(slipwayBinary, ["gc", "-q", "--store", indexer.root])
            let artifact = try #require(try indexer.allManifestDescriptors().first { $0.artifactType == GzipIndex.artifactType })
            #expect(indexer.hasBlob(artifact))
            try await runChecked(slipwayBinary, ["rmi", "-q", "--store", indexer.root, plain])
            try await runChecked(slipwayBinary, ["gc", "-q", "--store", indexer.root])
            #expect(try indexer.allManifestDescriptors().isEmpty && !indexer.hasBlob(artifact))
            let manifest = try await curl("http://\(registry.host)/v2/demo/manifests/v1", headers: ["Accept: application/vnd.oci.image.manifest.v1+json"])
            let tags = String(decoding: try await curl("http://\(registry.host)/v2/demo/tags/list").body, as: UTF8.self)
            let subject = try #require(manifest.headers["docker-content-digest"])
            #expect(tags.contains("sha256-" + subject.dropFirst("sha256:".count)), "docker-registry 2.8 has no Referrers API: \(tags)")
            let inspected = try await runChecked(slipwayBinary, ["inspect", "--json", plain])
            #expect(inspected.stdout.contains("\"gzipIndex\""))

            let skipped = try await mountImage(plain, at: scratch.sub("mnt0"), store: scratch.sub("node0"), options: ["--no-index"])
            let skippedState = try await skipped.status()
            #expect(skippedState.indexedLayers == 0 && skippedState.wholeLayers == 3)
            try await skipped.unmount()
            let mounted = try await mountImage(plain, at: scratch.sub("mnt"), store: scratch.sub("node"), options: ["--prefetch", "none"])
            #expect(try await mounted.status().indexedLayers == 3)
            try await runChecked(slipwayBinary, ["unpack", "-q", "--store", scratch.sub("node"), plain, scratch.sub("rootfs")])
            #expect(try describeTree(mounted.directory) == describeTree(scratch.sub("rootfs")))
            try await mounted.unmount()

            // v1's tag now names other content: its index is v1's manifest's, so nothing of it applies any more.
            let moved = try makeDemoLayout(scratch, largeFileBytes: 3 << 20, version: "2")
            try await runChecked(slipwayBinary, ["copy", "-q", "oci:\(moved.root):demo", plain])
            let remounted = try await mountImage(plain, at: scratch.sub("mnt2"), store: scratch.sub("node2"), options: ["--prefetch", "none"])
            let state = try await remounted.status()
            #expect(state.indexedLayers == 0 && state.wholeLayers == 3)
            try await remounted.unmount()
        }
    }

    @Test func anIndexThatLiesIsCaughtAndReadsFailRatherThanReturnWrongBytes() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let plain = try await publishDemo(registry.host, scratch)
            let indexer = try ContentStore(root: scratch.sub("indexer"))
            try await runChecked(slipwayBinary, ["index", "-q", "--store", indexer.root, plain])
            // Rewrite the large layer's index so it claims other bytes for the 6 MiB asset, then publish that.
            let artifact = try #require(try indexer.allManifestDescriptors().first { $0.artifactType == GzipIndex.artifactType })
            let manifest = try JSONDecoder().decode(Manifest.self, from: Data(try indexer.readBlob(artifact.digest)))
            var blobs = manifest.layers
            let largest = try #require(blobs.indices.max { blobs[$0].size < blobs[$1].size })
            var index = try GzipIndex.decode(try indexer.readBlob(blobs[largest].digest))
            let asset = try #require(index.entries.firstIndex { $0.type == "reg" && $0.size > 1 << 20 })
            let assetName = index.entries[asset].name
            for i in index.entries.indices where index.entries[i].name == assetName {
                index.entries[i].chunkDigest = Digest.sha256(of: [UInt8(i & 0xff)]).description
            }
            blobs[largest] = GzipIndexArtifact.indexBlob(try indexer.writeBlob(try index.encoded(), mediaType: GzipIndex.layerMediaType), of: try #require(
                blobs[largest].annotations?[GzipIndex.layerAnnotation].flatMap { try? Digest($0) }))
            let subject = try #require(manifest.subject)
            let (lying, bytes) = try GzipIndexArtifact.manifest(subject: subject, blobs: blobs)
            try await withSession(try makeSession()) { session in
                let client = session.pushClient(for: registry.host)
                for blob in blobs {
                    try await client.uploadBlob(repository: "demo", descriptor: blob, bytes: try indexer.readBlob(blob.digest))
                }
                try await client.uploadBlob(repository: "demo", descriptor: GzipIndexArtifact.emptyConfig, bytes: GzipIndexArtifact.emptyConfigBytes)
                try await client.pushReferrer(repository: "demo", artifact: lying, bytes: bytes, subject: subject.digest)
            }

            let mounted = try await mountImage(plain, at: scratch.sub("mnt"), store: scratch.sub("node"))
            #expect(try await mounted.status().indexedLayers == 3)
            let (_, error) = try readFile("\(mounted.directory)/\(assetName)")
            #expect(error == EIO, "a chunk that does not match the index's digest is never served")
            try await waitUntil("the background read rejected the layer") { try await mounted.status().statistics.layersRejected == 1 }
            try await mounted.unmount()
        }
    }

    // MARK: Helpers

    private func publishDemo(_ host: String, _ scratch: ScratchDirectory) async throws -> String {
        let layout = try makeDemoLayout(scratch, largeFileBytes: 6 << 20)
        let plain = "\(host)/demo:v1"
        try await runChecked(slipwayBinary, ["copy", "-q", "oci:\(layout.root):demo", plain])
        return plain
    }

    private func mountImage(_ reference: String, at directory: String, store: String, options: [String] = []) async throws -> LazyMountTests.Mounted {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try await runChecked(slipwayBinary, ["mount", "-q", "--store", store] + options + [reference, directory])
        return LazyMountTests.Mounted(directory: directory, store: store)
    }

    /// Body bytes of the blob requests in access-log entries.
    private func blobBytes(_ entries: some Sequence<[String: Any]>) -> Int {
        entries.filter { ($0["path"] as? String)?.contains("/blobs/") == true }.reduce(0) { $0 + (($1["bytes"] as? Int) ?? 0) }
    }
}
