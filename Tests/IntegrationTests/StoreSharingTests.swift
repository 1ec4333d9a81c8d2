import Archive
import ContentStore
import Foundation
import Images
import OCI
import Slipway
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The store shared by many processes: concurrent pulls, a pull killed with SIGKILL, garbage collection, and a
/// hostile image — all through the `slipway` command as users run it.
@Suite(.tags(.integration)) struct StoreSharingTests {
    @Test func eightConcurrentPullsDownloadEachBlobOnce() async throws {
        let scratch = try ScratchDirectory()
        let layout = try makeDemoLayout(scratch, largeFileBytes: 4 << 20)
        try await withRegistryAndProxy { _, proxy in
            try await withSession(try makeSession()) { session in try await push(layout, to: "\(proxy.host)/demo:v1", session: session) }
            let image = try await LayoutImageSource(store: layout, imageName: "demo").resolve()
            proxy.clearLog()
            // Slow the large layer down so the eight processes overlap while it downloads.
            let large = image.manifest.layers.max { $0.size < $1.size }!
            proxy.inject(.throttle(bytesPerSecond: 8 << 20), path: "/blobs/\(large.digest)", times: .max)
            let store = scratch.sub("shared-store")
            let processes = try (0..<8).map { _ in try ChildProcess(slipwayBinary, ["pull", "-q", "--store", store, "\(proxy.host)/demo:v1"]) }
            for process in processes {
                let result = await process.result()
                #expect(result.status == 0, "\(result.stderr)")
            }
            for blob in image.manifest.layers.map(\.digest) + [image.manifest.config.digest] {
                let fetched = proxy.requests(matching: "/blobs/\(blob)", method: "GET").filter { $0.status == 200 || $0.status == 206 }
                #expect(fetched.count == 1, "\(blob) fetched \(fetched.count) times")
            }
            let shared = try ContentStore(root: store)
            for layer in image.manifest.layers { #expect(shared.hasBlob(layer)) }
            #expect(try shared.images().map(\.name) == ["\(proxy.host)/demo:v1"])
        }
    }

    @Test func killedPullLeavesNothingVisibleAndResumes() async throws {
        let scratch = try ScratchDirectory()
        let layout = try makeDemoLayout(scratch, largeFileBytes: 16 << 20)
        try await withRegistryAndProxy { _, proxy in
            try await withSession(try makeSession()) { session in try await push(layout, to: "\(proxy.host)/demo:v1", session: session) }
            let image = try await LayoutImageSource(store: layout, imageName: "demo").resolve()
            let large = image.manifest.layers.max { $0.size < $1.size }!
            proxy.clearLog()
            proxy.inject(.throttle(bytesPerSecond: 4 << 20), path: "/blobs/\(large.digest)")
            let store = scratch.sub("store")
            let partial = "\(store)/ingest/sha256-\(large.digest.hex).partial"
            let victim = try ChildProcess(slipwayBinary, ["pull", "-q", "--store", store, "\(proxy.host)/demo:v1"])
            var partialBytes: Int64 = 0
            for _ in 0..<2000 where partialBytes < 2 << 20 {
                try await Task.sleep(for: .milliseconds(10))
                partialBytes = (try? FileManager.default.attributesOfItem(atPath: partial)[.size] as? Int64) ?? 0
            }
            victim.signal(SIGKILL)
            await victim.exitStatus()
            #expect(partialBytes >= 2 << 20 && partialBytes < large.size)
            let shared = try ContentStore(root: store)
            #expect(!shared.hasBlob(large))
            #expect(try shared.images().isEmpty)

            let again = try await run(slipwayBinary, ["pull", "--store", store, "\(proxy.host)/demo:v1"])
            #expect(again.status == 0, "\(again.stderr)")
            #expect(shared.hasBlob(large))
            let resumed = try #require(proxy.requests(matching: "/blobs/\(large.digest)", method: "GET").last)
            #expect(resumed.status == 206)
            #expect(resumed.range.map { $0.hasPrefix("bytes=") && !$0.hasPrefix("bytes=0-") } ?? false, "\(String(describing: resumed.range))")
            let bytes = try #require(FileManager.default.contents(atPath: shared.blobPath(large.digest)))
            #expect(Digest.sha256(of: [UInt8](bytes)) == large.digest)
        }
    }

    @Test func gcKeepsWhatImagesShareAndRemovesTheRest() async throws {
        let scratch = try ScratchDirectory()
        let v1 = try makeDemoLayout(scratch, version: "1")
        let v2 = try makeDemoLayout(scratch, version: "2")
        try await RegistryProcess.withRegistry { registry in
            try await withSession(try makeSession()) { session in
                try await push(v1, to: "\(registry.host)/demo:v1", session: session)
                try await push(v2, to: "\(registry.host)/demo:v2", session: session)
            }
            let store = scratch.sub("store")
            for tag in ["v1", "v2"] {
                let pulled = try await run(slipwayBinary, ["pull", "--unpack-layers", "--store", store, "\(registry.host)/demo:\(tag)"])
                #expect(pulled.status == 0, "\(pulled.stderr)")
            }
            let shared = try ContentStore(root: store)
            let first = try await LayoutImageSource(store: shared, imageName: "\(registry.host)/demo:v1").resolve()
            let second = try await LayoutImageSource(store: shared, imageName: "\(registry.host)/demo:v2").resolve()
            for layer in first.layers + second.layers { #expect(shared.hasLayerDirectory(layer.diffID)) }

            #expect(try await run(slipwayBinary, ["rmi", "--store", store, "\(registry.host)/demo:v1"]).status == 0)
            let collected = try await run(slipwayBinary, ["gc", "--json", "--store", store])
            #expect(collected.status == 0, "\(collected.stderr)")
            let report = try JSONDecoder().decode(ContentStore.CollectionReport.self, from: Data(collected.stdout.utf8))
            // v1's manifest, config and version layer go; the two shared layers stay.
            #expect(report.removedBlobs == 3)
            #expect(report.removedLayers == 1)
            for layer in second.manifest.layers { #expect(shared.hasBlob(layer)) }
            for layer in second.layers { #expect(shared.hasLayerDirectory(layer.diffID)) }
            #expect(!shared.hasBlob(first.manifestDescriptor))
            let inspect = try await run("skopeo", ["inspect", "oci:\(store):\(registry.host)/demo:v2"])
            #expect(inspect.status == 0, "\(inspect.stderr)")
        }
    }

    @Test func hostileLayerWritesNothingOutsideTheTarget() async throws {
        let scratch = try ScratchDirectory()
        let layout = try ContentStore(root: scratch.sub("layout"))
        var builder = ImageBuilder(store: layout)
        try builder.addLayer(
            [
                (TarHeader(name: "etc/", type: .directory, mode: 0o755), []),
                (TarHeader(name: "escape", type: .symbolicLink, mode: 0o777, linkName: "../../"), []),
                (TarHeader(name: "escape/owned", type: .regular, mode: 0o644, size: 5), Array("owned".utf8)),
                (TarHeader(name: "../outside", type: .regular, mode: 0o644, size: 5), Array("owned".utf8)),
            ], comment: "hostile")
        try builder.commit(name: "demo", config: .init())
        try await RegistryProcess.withRegistry { registry in
            try await withSession(try makeSession()) { session in try await push(layout, to: "\(registry.host)/evil:v1", session: session) }
            let target = scratch.sub("jail/rootfs")
            let result = try await run(slipwayBinary, ["unpack", "--store", scratch.sub("store"), "\(registry.host)/evil:v1", target])
            #expect(result.status == 1)
            #expect(result.stderr.lowercased().contains("outside") || result.stderr.lowercased().contains("escape"), "\(result.stderr)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.sub("jail")).isEmpty)
            #expect(!FileManager.default.fileExists(atPath: scratch.sub("owned")))
            #expect(!FileManager.default.fileExists(atPath: scratch.sub("outside")))
        }
    }
}

/// The command-line contract on bad input: nothing lost, one JSON document, read-only reads.
@Suite(.tags(.integration)) struct CommandLineContractTests {
    @Test func helpOnEverySubcommandExitsZero() async throws {
        for arguments in [["--help"], ["convert", "--help"], ["help", "pull"], ["assemble", "-h"]] {
            let result = try await run(slipwayBinary, arguments)
            #expect(result.status == 0, "\(arguments): \(result.stderr)")
            #expect(result.stdout.contains("USAGE:"), "\(arguments)")
        }
        let unknown = try await run(slipwayBinary, ["convert", "--no-such-flag"])
        #expect(unknown.status == 2)
    }

    @Test func unpackNeverReplacesAnExistingFile() async throws {
        let scratch = try ScratchDirectory()
        let layout = try makeDemoLayout(scratch)
        try "precious\n".write(toFile: scratch.sub("notes.txt"), atomically: true, encoding: .utf8)
        let result = try await run(slipwayBinary, ["unpack", "--json", "--store", scratch.sub("store"), "oci:\(layout.root):demo", scratch.sub("notes.txt")])
        #expect(result.status == 1)
        #expect(try String(contentsOfFile: scratch.sub("notes.txt"), encoding: .utf8) == "precious\n")
        // Even a failure prints exactly one JSON document on stdout.
        let failure = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        #expect((failure?["error"] as? String)?.contains("not an empty directory") == true)
    }

    @Test func imagesAndRawInspectDescribeTheStore() async throws {
        let scratch = try ScratchDirectory()
        let made = try await run(slipwayBinary, ["demo-image", "--json", "oci:\(scratch.sub("layout")):demo"])
        #expect(made.status == 0, "\(made.stderr)")
        let digest = try #require((try JSONSerialization.jsonObject(with: Data(made.stdout.utf8)) as? [String: Any])?["digest"] as? String)
        #expect(try await run(slipwayBinary, ["pull", "-q", "--store", scratch.sub("store"), "oci:\(scratch.sub("layout")):demo"]).status == 0)
        let listed = try await run(slipwayBinary, ["images", "--json", "--store", scratch.sub("store")])
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]])
        #expect(rows.count == 1)
        #expect(rows.first?["digest"] as? String == digest)
        #expect(rows.first?["layers"] as? Int == 3)
        let raw = try await run(slipwayBinary, ["inspect", "--raw", "oci:\(scratch.sub("layout")):demo"])
        #expect(Digest.sha256(of: Array(raw.stdout.utf8)).description == digest)
    }

    @Test func readingALayoutWritesNothingToIt() async throws {
        let scratch = try ScratchDirectory()
        let layout = try makeDemoLayout(scratch)
        let copied = try await run("skopeo", ["copy", "-q", "oci:\(layout.root):demo", "oci:\(scratch.sub("theirs")):demo"])
        #expect(copied.status == 0, "\(copied.stderr)")
        let before = try FileManager.default.contentsOfDirectory(atPath: scratch.sub("theirs")).sorted()
        let inspected = try await run(slipwayBinary, ["inspect", "--json", "oci:\(scratch.sub("theirs")):demo"])
        #expect(inspected.status == 0, "\(inspected.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.sub("theirs")).sorted() == before)
    }
}

/// gc never runs while a pull or unpack holds the store.
@Suite(.tags(.integration)) struct CollectionSafetyTests {
    @Test func gcRefusesWhileTheStoreIsInUse() async throws {
        let scratch = try ScratchDirectory()
        let store = try ContentStore(root: scratch.sub("store"))
        let lease = try await store.lockForWriting()
        let busy = try await run(slipwayBinary, ["gc", "--store", store.root])
        #expect(busy.status == 1)
        #expect(busy.stderr.contains("in use by another slipway process"), "\(busy.stderr)")
        lease.release()
        let free = try await run(slipwayBinary, ["gc", "--store", store.root])
        #expect(free.status == 0, "\(free.stderr)")
    }
}
