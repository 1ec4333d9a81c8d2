import ContentStore
import EStargz
import Foundation
import OCI
import Slipway
import Testing
import TestSupport

/// `slipway convert --to estargz` end to end: the result is in the registry, every layer's TOC matches its
/// annotation, it unpacks to the original tree (plus the eStargz metadata files), and converting it again keeps it.
@Suite struct ConvertTests {
    @Test func convertsToEStargzThroughARegistry() async throws {
        let scratch = try ScratchDirectory()
        let layout = try makeDemoLayout(scratch)
        try await RegistryProcess.withRegistry { registry in
            let original = "\(registry.host)/demo:v1"
            let converted = "\(registry.host)/demo:v1-esgz"
            #expect(try run(slipwayBinary, ["copy", "-q", "oci:\(layout.root):demo", original]).status == 0)
            let first = try run(slipwayBinary, ["convert", "--json", "--chunk-size", "1048576", "--store", scratch.sub("store"), original, converted])
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
            let inspected = try run(slipwayBinary, ["inspect", "--json", converted])
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

            let plain = try run(slipwayBinary, ["unpack", "-q", "--store", scratch.sub("u1"), original, scratch.sub("plain")])
            let lazy = try run(slipwayBinary, ["unpack", "-q", "--store", scratch.sub("u2"), converted, scratch.sub("lazy")])
            #expect(plain.status == 0 && lazy.status == 0, "\(plain.stderr) \(lazy.stderr)")
            var lazyTree = try describeTree(scratch.sub("lazy"))
            #expect(lazyTree.removeValue(forKey: "stargz.index.json") != nil)
            #expect(lazyTree.removeValue(forKey: ".no.prefetch.landmark") != nil)
            #expect(lazyTree == (try describeTree(scratch.sub("plain"))))

            // Already eStargz: every layer is kept and the image comes out the same.
            let again = try run(slipwayBinary, ["convert", "--json", "--store", scratch.sub("store"), converted, "\(registry.host)/demo:v1-esgz2"])
            #expect(again.status == 0, "\(again.stderr)")
            struct Output: Decodable {
                struct Convert: Decodable { var manifestDigest: String; var convertedLayers: Int; var keptLayers: Int }
                var convert: Convert
            }
            let firstReport = try JSONDecoder().decode(Output.self, from: Data(first.stdout.utf8))
            let secondReport = try JSONDecoder().decode(Output.self, from: Data(again.stdout.utf8))
            #expect(secondReport.convert.convertedLayers == 0 && secondReport.convert.keptLayers == 3)
            #expect(secondReport.convert.manifestDigest == firstReport.convert.manifestDigest)
        }
    }
}
