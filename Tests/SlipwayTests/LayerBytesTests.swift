import Archive
import ContentStore
import Foundation
import Images
import OCI
import Slipway
import Synchronization
import Testing
import TestSupport

/// A layer's bytes as async sequences: the same bytes from a local file or a download, verified before the
/// sequence ends, a bounded distance ahead of a slow reader, and stopped when the reader goes.
@Suite(.tags(.unit)) struct LayerBytesTests {
    @Test(arguments: [LayerCompression.none, .gzip, .zstd])
    func theBlobAndTheTarReadTheSameFromAFileOrADownload(_ compression: LayerCompression) async throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        var builder = ImageBuilder(store: store, compression: compression)
        try builder.addLayer([file("data", String(repeating: "slipway ", count: 300_000)), file("etc/hostname", "node\n")], comment: "one")
        try builder.commit(name: "built", config: ImageConfig.ContainerConfig(Cmd: ["/bin/sh"]), platform: .host)
        let layout = LayoutImageSource(store: store, imageName: "built")
        let local = try #require(try await layout.resolve(platform: .host).layers.first)
        let downloaded = SourceLayer(descriptor: local.descriptor, diffID: local.diffID, source: RemoteLikeSource(layout))
        #expect(downloaded.localFile == nil)
        let blob = try [UInt8](Data(contentsOf: URL(fileURLWithPath: try #require(local.localFile))))
        for layer in [local, downloaded as any Layer] {
            #expect(try await collect(layer.compressedBytes()) == blob)
            let tar = try await collect(layer.uncompressedTar())
            #expect(Digest.sha256(of: tar) == layer.diffID)
            #expect(String(decoding: tar[512..<520], as: UTF8.self) == "slipway ")
        }
    }

    @Test func aBlobThatIsNotItsDigestFailsAtTheEnd() async throws {
        let tar = try smallTar()
        let layer = ScriptedLayer(bytes: tar, claimedDigest: .sha256(of: Array("something else".utf8)), diffID: .sha256(of: tar))
        await #expect(throws: BlobSinkError.self) { _ = try await collect(layer.compressedBytes()) }
        await #expect(throws: BlobSinkError.self) { _ = try await collect(layer.uncompressedTar()) }
    }

    @Test func aTarThatIsNotItsDiffIDFails() async throws {
        let tar = try smallTar()
        let layer = ScriptedLayer(bytes: tar, diffID: .sha256(of: Array("another tar".utf8)))
        #expect(try await collect(layer.compressedBytes()) == tar)
        let error = await #expect(throws: LayerReadError.self) { _ = try await collect(layer.uncompressedTar()) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("the image config promises"))
        await #expect(throws: LayerReadError.self) { try await layer.withUncompressedTar { decoded in while try decoded.nextChunk() != nil {} } }
    }

    /// The download runs on the one thread this test's task also needs: a download that blocked the thread while it
    /// waited for the reader would stop the test (its time limit fails it).
    @Test(.timeLimit(.minutes(1))) func aDownloadStaysABoundedDistanceAheadOfASlowReader() async throws {
        try await withTaskExecutorPreference(OneThreadExecutor.shared) {
            let layer = ScriptedLayer(generating: 64 << 20)
            var read: Int64 = 0
            var furthestAhead: Int64 = 0
            for try await chunk in layer.compressedBytes() {
                read += Int64(chunk.count)
                furthestAhead = max(furthestAhead, layer.appended.load(ordering: .relaxed) - read)
                try await Task.sleep(for: .milliseconds(20))
                if read >= 24 << 20 { break }
            }
            // The sink holds 8 MiB, the hand-over four chunks of 1 MiB, and one append may be on its way.
            #expect(furthestAhead <= 13 << 20, "the download ran \(furthestAhead) bytes ahead")
            #expect(furthestAhead >= 1 << 20)
        }
    }

    @Test func aReaderThatStopsStopsTheDownload() async throws {
        let layer = ScriptedLayer(generating: 1 << 40)
        var iterator = layer.uncompressedTar().makeAsyncIterator()
        _ = try await iterator.next()
        _ = consume iterator
        try await waitUntil("the download ends") { layer.ended.load(ordering: .relaxed) }
        #expect(layer.appended.load(ordering: .relaxed) < 64 << 20)
    }

    private func smallTar() throws -> [UInt8] {
        var writer = TarWriter()
        let (header, contents) = file("data", String(repeating: "7", count: 100_000))
        try writer.write(header, contents: contents)
        try writer.finish()
        return writer.bytes
    }

    private func collect(_ bytes: LayerBytes) async throws -> [UInt8] {
        var all: [UInt8] = []
        for try await chunk in bytes { all += chunk }
        return all
    }
}

/// A layer served by this test from memory, 1 MiB per append, pacing itself as a download does (`waitForRoom`
/// before each append): given bytes with their digest (or a wrong one), or endless generated bytes.
private final class ScriptedLayer: Layer {
    let descriptor: Descriptor
    let diffID: Digest
    var localFile: String? { nil }
    private let bytes: [UInt8]?
    let appended = Atomic<Int64>(0)
    let ended = Atomic<Bool>(false)

    init(bytes: [UInt8], claimedDigest: Digest? = nil, diffID: Digest) {
        self.bytes = bytes
        descriptor = Descriptor(mediaType: MediaType.ociLayer, digest: claimedDigest ?? .sha256(of: bytes), size: Int64(bytes.count))
        self.diffID = diffID
    }

    /// A plain tar of zeros as far as a reader gets (a tar reader sees end-of-archive blocks), never verified.
    init(generating size: Int64) {
        bytes = nil
        descriptor = Descriptor(mediaType: MediaType.ociLayer, digest: .sha256(of: []), size: size)
        diffID = .sha256(of: [])
    }

    func fetch(into sink: any BlobSink) async throws {
        defer { ended.store(true, ordering: .relaxed) }
        let piece = 1 << 20
        let zeros = [UInt8](repeating: 0, count: piece)
        var offset = sink.count
        while offset < descriptor.size {
            try await sink.waitForRoom()
            let count = Int(min(Int64(piece), descriptor.size - offset))
            if let bytes {
                try bytes[Int(offset)..<Int(offset) + count].withUnsafeBytes { try sink.append($0) }
            } else {
                try zeros[0..<count].withUnsafeBytes { try sink.append($0) }
            }
            offset += Int64(count)
            appended.add(Int64(count), ordering: .relaxed)
        }
    }

    func read(ranges: [Range<Int64>]) async throws -> [[UInt8]] {
        ranges.map { range in bytes.map { Array($0[Int(range.lowerBound)..<Int(range.upperBound)]) } ?? Array(repeating: 0, count: range.count) }
    }
}
