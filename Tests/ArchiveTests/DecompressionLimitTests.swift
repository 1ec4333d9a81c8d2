import Archive
import Foundation
import Synchronization
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A layer may decode to at most `min(absolute, max(floor, ratio × compressed size))` bytes, whichever consumer
/// reads it: extraction, the decoded stream a conversion reads, or a diffID computation.
@Suite(.tags(.unit)) struct DecompressionLimitTests {
    /// A valid tar of one file of `zeros` zero bytes: the shape of a decompression bomb.
    func zeroFileTar(_ zeros: Int) throws -> [UInt8] {
        try makeTar { w in try w.add((TarHeader(name: "zeros", type: .regular, mode: 0o644), [UInt8](repeating: 0, count: zeros))) }
    }

    func compress(_ tar: [UInt8], _ compression: LayerCompression) throws -> [UInt8] {
        switch compression {
        case .gzip: return try gzip(data: tar)
        case .zstd: return try zstd(data: tar)
        case .none: return tar
        }
    }

    func tooLarge(_ kind: ArchiveError.Kind?) -> (layer: String, limit: Int64)? {
        if case .layerTooLarge(let layer, let limit, _) = kind { return (layer, limit) }
        return nil
    }

    @Test func limitIsTheSmallerOfAbsoluteAndTheLargerOfFloorAndRatio() {
        let limit = DecompressionLimit(absolute: 1000, floor: 100, ratio: 10)
        #expect(limit.maximumSize(forCompressedSize: 5) == 100)
        #expect(limit.maximumSize(forCompressedSize: 50) == 500)
        #expect(limit.maximumSize(forCompressedSize: 500) == 1000)
        // Products beyond Int64 saturate instead of trapping.
        #expect(limit.maximumSize(forCompressedSize: .max) == 1000)
        #expect(DecompressionLimit(absolute: .max, floor: 0, ratio: .max).maximumSize(forCompressedSize: 3) == .max)
    }

    @Test func defaultsAcceptAnIncompressibleGigabyteLayer() {
        // The benchmark's 1 GiB of random data compresses to a little more than itself.
        let standard = DecompressionLimit.standard
        #expect(standard.maximumSize(forCompressedSize: (1 << 30) + (1 << 20)) >= (1 << 30) + (1 << 20))
        #expect(standard.maximumSize(forCompressedSize: 1 << 20) == 1 << 30)
        #expect(standard.maximumSize(forCompressedSize: 4 << 30) == 128 << 30)
    }

    @Test(arguments: [LayerCompression.gzip, .zstd, .none])
    func extractionStopsAtTheLimitNamingTheLayer(compression: LayerCompression) throws {
        let sb = Sandbox()
        let tar = try zeroFileTar(8 << 20)
        let path = sb.base + "/layer"
        try writeBytes(path, try compress(tar, compression))
        let limit = DecompressionLimit(absolute: 2 << 20, floor: 0, ratio: .max)
        let kind = archiveKind {
            try LayerApplier.apply(layerAt: path, compression: compression, to: sb.target, name: "sha256:bomb", limit: limit)
        }
        let failure = try #require(tooLarge(kind), "got \(String(describing: kind))")
        #expect(failure.layer == "sha256:bomb")
        #expect(failure.limit == 2 << 20)
        #expect(ArchiveError(kind!).description.contains("--max-layer-size"))
    }

    @Test(arguments: [LayerCompression.gzip, .zstd])
    func aLayerOfExactlyTheLimitPassesAndOneByteLessFails(compression: LayerCompression) throws {
        let sb = Sandbox()
        let tar = try zeroFileTar(1 << 20)
        let path = sb.base + "/layer"
        try writeBytes(path, try compress(tar, compression))
        let exact = DecompressionLimit(absolute: Int64(tar.count), floor: 0, ratio: .max)
        let result = try LayerApplier.apply(layerAt: path, compression: compression, to: sb.target, limit: exact)
        #expect(result.uncompressedSize == Int64(tar.count))
        let short = DecompressionLimit(absolute: Int64(tar.count) - 1, floor: 0, ratio: .max)
        let digestKind = archiveKind { _ = try LayerDigester.diffID(ofLayerAt: path, compression: compression, limit: short) }
        #expect(tooLarge(digestKind)?.layer == path)
    }

    @Test func theRatioBoundsASmallBlob() throws {
        let sb = Sandbox()
        let blob = try gzip(data: try zeroFileTar(4 << 20))
        let path = sb.base + "/layer"
        try writeBytes(path, blob)
        let ratio: Int64 = 10
        let kind = archiveKind {
            _ = try LayerDigester.diffID(ofLayerAt: path, compression: .gzip, limit: DecompressionLimit(absolute: .max, floor: 0, ratio: ratio))
        }
        #expect(tooLarge(kind)?.limit == Int64(blob.count) * ratio)
    }

    @Test func theDecodedStreamAConversionReadsIsBounded() throws {
        let sb = Sandbox()
        let path = sb.base + "/layer"
        try writeBytes(path, try zstd(data: try zeroFileTar(8 << 20)))
        let decoded = try DecodedLayer(
            layerAt: path, compression: .zstd, name: "sha256:stream", limit: DecompressionLimit(absolute: 1 << 20, floor: 0, ratio: 1))
        let reader = decoded.tarReader()
        let kind = archiveKind {
            while let _ = try reader.next() { try reader.readContents { _ in } }
            try reader.drain()
        }
        #expect(tooLarge(kind)?.layer == "sha256:stream")
        #expect(tooLarge(archiveKind { _ = try decoded.finishedDigest() }) != nil)
    }

    /// A download of unknown size is judged by the compressed bytes received so far; a declared size is used as is.
    @Test func streamedBlobsAreBoundedWithOrWithoutADeclaredSize() throws {
        let blob = try gzip(data: try zeroFileTar(8 << 20))
        for declared in [nil, Int64(blob.count)] {
            let sb = Sandbox()
            let pending = Mutex<[UInt8]?>(blob)
            let source = ChunkSource(expectedSize: declared) { pending.withLock { bytes in defer { bytes = nil }; return bytes } }
            let kind = archiveKind {
                try LayerApplier.apply(
                    from: source, compression: .gzip, to: sb.target, name: "sha256:download",
                    limit: DecompressionLimit(absolute: .max, floor: 1 << 20, ratio: 2))
            }
            #expect(tooLarge(kind)?.limit == 1 << 20, "declared \(String(describing: declared)): \(String(describing: kind))")
        }
    }
}
