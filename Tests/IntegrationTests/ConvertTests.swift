import Archive
import ContentStore
import EStargz
import Foundation
import Images
import OCI
import Slipway
import Testing
import TestSupport

/// `slipway convert --to estargz` end to end: the result is in the registry, every layer's TOC matches its
/// annotation, it unpacks to the original tree (plus the eStargz metadata files), and converting it again keeps it.
@Suite(.tags(.integration)) struct ConvertTests {
    @Test func convertsToEStargzThroughARegistry() async throws {
        let scratch = try ScratchDirectory()
        let layout = try makeDemoLayout(scratch)
        try await RegistryProcess.withRegistry { registry in
            let original = "\(registry.host)/demo:v1"
            let converted = "\(registry.host)/demo:v1-esgz"
            #expect(try await run(slipwayBinary, ["copy", "-q", "oci:\(layout.root):demo", original]).status == 0)
            let first = try await run(slipwayBinary, ["convert", "--json", "--chunk-size", "1048576", "--store", scratch.sub("store"), original, converted])
            #expect(first.status == 0, "\(first.stderr)")

            try await withSession(try makeSession()) { session in
                let store = try ContentStore(root: scratch.sub("check"))
                let (image, _) = try await Puller(session: session, store: store).pull(try ImageLocation(parsing: converted))
                for layer in image.manifest.layers {
                    let annotation = try #require(layer.annotations?[tocDigestAnnotation])
                    let blob = try #require(FileManager.default.contents(atPath: store.blobPath(layer.digest)))
                    let reader = try EStargzReader(blob: [UInt8](blob))
                    try reader.verifyTOC(try Digest(annotation))
                    #expect(layer.annotations?[uncompressedSizeAnnotation] != nil)
                }
                // The 4 MiB asset is split into 1 MiB chunks.
                let large = try #require(image.manifest.layers.max { $0.size < $1.size })
                let reader = try EStargzReader(blob: [UInt8](try #require(FileManager.default.contents(atPath: store.blobPath(large.digest)))))
                #expect(reader.toc.entries.filter { $0.name == "opt/app/data.bin" }.count == 4)
            }

            // inspect reads each layer's footer and TOC with Range requests and verifies it.
            let inspected = try await run(slipwayBinary, ["inspect", "--json", converted])
            #expect(inspected.status == 0, "\(inspected.stderr)")
            struct Summary: Decodable {
                struct Layer: Decodable {
                    struct Info: Decodable { var tocDigest: String; var files: Int; var chunks: Int }
                    var size: Int64
                    var estargz: Info?
                }
                var layers: [Layer]
            }
            let summary = try JSONDecoder().decode(Summary.self, from: Data(inspected.stdout.utf8))
            #expect(summary.layers.allSatisfy { $0.estargz != nil })
            let largest = try #require(summary.layers.max { $0.size < $1.size }?.estargz)
            #expect(largest.files == 2)  // run.sh and data.bin; the config symlink is not a file
            #expect(largest.chunks == 5)  // run.sh + four 1 MiB chunks of data.bin

            let plain = try await run(slipwayBinary, ["unpack", "-q", "--store", scratch.sub("u1"), original, scratch.sub("plain")])
            let lazy = try await run(slipwayBinary, ["unpack", "-q", "--store", scratch.sub("u2"), converted, scratch.sub("lazy")])
            #expect(plain.status == 0 && lazy.status == 0, "\(plain.stderr) \(lazy.stderr)")
            var lazyTree = try describeTree(scratch.sub("lazy"))
            #expect(lazyTree.removeValue(forKey: "stargz.index.json") != nil)
            #expect(lazyTree.removeValue(forKey: ".no.prefetch.landmark") != nil)
            let plainTree = try describeTree(scratch.sub("plain"))
            #expect(lazyTree == plainTree)

            // eStargz is plain tar+gzip to eStargz-unaware tools: skopeo pulls it and umoci unpacks the same tree.
            let copied = try await run("skopeo", ["copy", "--src-tls-verify=false", "docker://\(converted)", "oci:\(scratch.sub("skopeo")):esgz"])
            #expect(copied.status == 0, "\(copied.stderr)")
            let unpacked = try await run("umoci", ["unpack", "--image", "\(scratch.sub("skopeo")):esgz", scratch.sub("bundle")])
            #expect(unpacked.status == 0, "\(unpacked.stderr)")
            var umociTree = try describeTree(scratch.sub("bundle/rootfs"))
            #expect(umociTree.removeValue(forKey: "stargz.index.json") != nil)
            #expect(umociTree.removeValue(forKey: ".no.prefetch.landmark") != nil)
            #expect(Set(umociTree.keys) == Set(plainTree.keys))
            for (path, entry) in plainTree where umociTree[path] != entry {
                Issue.record("\(path): slipway \(entry) vs umoci \(umociTree[path].map(\.description) ?? "missing")")
            }

            // Already eStargz: every layer is kept and the image comes out the same.
            let again = try await run(slipwayBinary, ["convert", "--json", "--store", scratch.sub("store"), converted, "\(registry.host)/demo:v1-esgz2"])
            #expect(again.status == 0, "\(again.stderr)")
            let firstReport = try JSONDecoder().decode(EStargzConverter.Report.self, from: Data(first.stdout.utf8))
            let secondReport = try JSONDecoder().decode(EStargzConverter.Report.self, from: Data(again.stdout.utf8))
            #expect(secondReport.convertedLayers == 0 && secondReport.keptLayers == 3)
            #expect(secondReport.manifestDigest == firstReport.manifestDigest)
        }
    }
}

/// `--prioritize`, and what a conversion leaves behind when its input is bad.
@Suite(.tags(.integration)) struct ConvertInputTests {

    /// Files in the store's ingest area that are not lock files: what a failed conversion must not leave.
    func leftovers(_ root: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "\(root)/ingest")) ?? []).filter { !$0.hasSuffix(".lock") }
    }

    @Test func prioritizedFilesMoveToTheFrontOfTheirLayer() async throws {
        let scratch = try ScratchDirectory()
        let layout = try makeDemoLayout(scratch)
        let out = scratch.sub("out")
        let list = scratch.sub("list")
        try write("/opt/app/data.bin\nusr/bin/hello\nno/such/file\n", to: list)

        let refused = try await run(slipwayBinary, ["convert", "-q", "--prioritize", list, "oci:\(layout.root):demo", "oci:\(out):fast"])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("no/such/file") && refused.stderr.contains("--allow-missing"), "\(refused.stderr)")
        #expect(try ContentStore(root: out).image(named: "fast") == nil)
        #expect(leftovers(out).isEmpty, "\(leftovers(out))")

        let accepted = try await run(
            slipwayBinary, ["convert", "--json", "--allow-missing", "--prioritize", list, "oci:\(layout.root):demo", "oci:\(out):fast"])
        #expect(accepted.status == 0, "\(accepted.stderr)")
        let report = try JSONDecoder().decode(EStargzConverter.Report.self, from: Data(accepted.stdout.utf8))
        #expect(report.missingPrioritizedFiles == ["no/such/file"])
        // Base layer (hello) and app layer (data.bin) have a prefetch region; the third layer has neither file.
        #expect(report.layers.map { $0.prefetchBytes > 0 } == [true, true, false])
        let app = try EStargzReader(blob: Array(try Data(contentsOf: URL(fileURLWithPath: try ContentStore(root: out).blobPath(Digest(report.layers[1].digest))))))
        #expect(app.toc.entries.prefix(4).map(\.name) == ["opt/", "opt/app/", "opt/app/data.bin", prefetchLandmarkName])

        // An image that is eStargz already is converted again when files are prioritized, not kept.
        try write("opt/app/run.sh\n", to: list)
        let again = try await run(slipwayBinary, ["convert", "--json", "--prioritize", list, "oci:\(out):fast", "oci:\(out):again"])
        #expect(again.status == 0, "\(again.stderr)")
        let reconverted = try JSONDecoder().decode(EStargzConverter.Report.self, from: Data(again.stdout.utf8))
        #expect(reconverted.convertedLayers == 3)
        #expect(reconverted.layers.map { $0.prefetchBytes > 0 } == [false, true, false])
        try write("no/such/file\n", to: list)
        #expect(try await run(slipwayBinary, ["convert", "-q", "--prioritize", list, "oci:\(out):fast", "oci:\(out):bogus"]).status == 1)

        // ctr-remote's record format names the layer: data.bin offered to the base layer only is missing.
        let records = scratch.sub("records")
        try write(#"{"path":"opt/app/data.bin","manifestDigest":"sha256:x","layerIndex":0}"# + "\n", to: records)
        let wrongLayer = try await run(slipwayBinary, ["convert", "-q", "--prioritize", records, "oci:\(layout.root):demo", "oci:\(out):rec"])
        #expect(wrongLayer.status == 1 && wrongLayer.stderr.contains("opt/app/data.bin"), "\(wrongLayer.stderr)")
    }

    /// A layout whose single layer is `blob`, declared as gzip, with a config that promises `diffID`.
    func makeBadLayout(_ path: String, blob: [UInt8], diffID: Digest, mediaType: String = MediaType.ociLayerGzip) throws {
        let store = try ContentStore(root: path)
        let layer = try store.writeBlob(blob, mediaType: mediaType)
        let config = ImageConfig(platform: .host, config: nil, diffIDs: [diffID])
        let configDescriptor = try store.writeBlob(Array(try JSONEncoder.canonical.encode(config)), mediaType: MediaType.ociConfig)
        let manifest = Manifest(config: configDescriptor, layers: [layer])
        try store.setImage(named: "bad", to: try store.writeBlob(Array(try JSONEncoder.canonical.encode(manifest)), mediaType: MediaType.ociManifest))
    }

    @Test func badLayersFailNamingTheLayerAndLeaveNothing() async throws {
        let scratch = try ScratchDirectory()
        let notGzip = Array("this is not a gzip stream, nor a tar".utf8)
        let notTar = try gzip(data: Array(repeating: 0x41, count: 4096))
        var tarBytes = TarWriter()
        try tarBytes.write(TarHeader(name: "a", type: .regular, mode: 0o644, size: 3), contents: Array("abc".utf8))
        try tarBytes.finish()
        let goodTar = try gzip(data: tarBytes.bytes)
        let cases: [(String, [UInt8], Digest, String)] = [
            ("not-gzip", notGzip, .sha256(of: notGzip), "gzip"),
            ("not-tar", notTar, .sha256(of: Array(repeating: 0x41, count: 4096)), "tar"),
            ("truncated", Array(goodTar.dropLast(12)), .sha256(of: tarBytes.bytes), "truncated"),
            ("wrong-diffid", goodTar, .sha256(of: Array("other".utf8)), "promises"),
        ]
        for (name, blob, diffID, expected) in cases {
            let input = scratch.sub("in-\(name)")
            let out = scratch.sub("out-\(name)")
            try makeBadLayout(input, blob: blob, diffID: diffID)
            let layer = Digest.sha256(of: blob)
            let result = try await run(slipwayBinary, ["convert", "-q", "oci:\(input):bad", "oci:\(out):bad"])
            #expect(result.status == 1, "\(name)")
            #expect(result.stderr.contains("layer 1 (\(layer))"), "\(name): \(result.stderr)")
            #expect(result.stderr.lowercased().contains(expected), "\(name): \(result.stderr)")
            #expect(try ContentStore(root: out).image(named: "bad") == nil, "\(name)")
            #expect(leftovers(out).isEmpty, "\(name): \(leftovers(out))")
        }
    }

    /// Some tools label gzip content as plain tar. Such a layer converts as it unpacks, from a layout (read in
    /// place) and from a registry (streamed): one decision of a layer's compression serves every consumer.
    @Test func gzipLabelledAsPlainTarConvertsAsItUnpacks() async throws {
        let scratch = try ScratchDirectory()
        var tarBytes = TarWriter()
        try tarBytes.write(TarHeader(name: "hello.txt", type: .regular, mode: 0o644, size: 3), contents: Array("hi\n".utf8))
        try tarBytes.finish()
        let input = scratch.sub("mislabelled")
        try makeBadLayout(input, blob: try gzip(data: tarBytes.bytes), diffID: .sha256(of: tarBytes.bytes), mediaType: MediaType.ociLayer)

        func expectUnpacks(_ reference: String, _ name: String) async throws {
            let rootfs = scratch.sub("rootfs-\(name)")
            let unpacked = try await run(slipwayBinary, ["unpack", "-q", "--store", scratch.sub("store-\(name)"), reference, rootfs])
            #expect(unpacked.status == 0, "\(name): \(unpacked.stderr)")
            #expect(FileManager.default.contents(atPath: rootfs + "/hello.txt") == Data("hi\n".utf8), "\(name)")
        }
        try await expectUnpacks("oci:\(input):bad", "original")
        let local = try await run(slipwayBinary, ["convert", "-q", "oci:\(input):bad", "oci:\(scratch.sub("out")):from-layout"])
        #expect(local.status == 0, "\(local.stderr)")
        try await expectUnpacks("oci:\(scratch.sub("out")):from-layout", "from-layout")

        try await RegistryProcess.withRegistry { registry in
            let remote = "\(registry.host)/mislabelled:v1"
            #expect(try await run(slipwayBinary, ["copy", "-q", "oci:\(input):bad", remote]).status == 0)
            let streamed = try await run(slipwayBinary, ["convert", "-q", remote, "oci:\(scratch.sub("out")):from-registry"])
            #expect(streamed.status == 0, "\(streamed.stderr)")
            try await expectUnpacks("oci:\(scratch.sub("out")):from-registry", "from-registry")
        }
    }

    @Test func corruptedDownloadIsNotConvertedOrPushed() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let layout = try makeDemoLayout(scratch)
            let source = "\(proxy.host)/demo:v1"
            #expect(try await run(slipwayBinary, ["copy", "-q", "oci:\(layout.root):demo", source]).status == 0)
            let image = try await LayoutImageSource(store: layout, imageName: "demo").resolve()
            let large = try #require(image.manifest.layers.max { $0.size < $1.size })
            proxy.inject(.flipByte(at: 1000), path: "/blobs/\(large.digest)", times: .max)
            let store = scratch.sub("store")
            let result = try await run(slipwayBinary, ["convert", "-q", "--store", store, source, "\(registry.host)/demo:esgz"])
            #expect(result.status == 1)
            #expect(result.stderr.contains(large.digest.description), "\(result.stderr)")
            let tag = try await run(slipwayBinary, ["inspect", "-q", "\(registry.host)/demo:esgz"])
            #expect(tag.status != 0, "the converted image must not be tagged")
            #expect(leftovers(store).isEmpty, "\(leftovers(store))")
            // Streaming: the source's layers were never stored.
            let stored = (try? FileManager.default.contentsOfDirectory(atPath: "\(store)/blobs/sha256")) ?? []
            #expect(!image.manifest.layers.contains { stored.contains($0.digest.hex) })
        }
    }
}
