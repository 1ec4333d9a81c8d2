import Archive
import EStargz
import Foundation
import GzipIndex
import OCI
import TestSupport
import Testing

@Suite("Seekable gzip index")
struct GzipIndexTests {
    @Test("every file of a layer compressed by gzip(1) reads back through the index, chunk by chunk")
    func filesReadBackThroughTheIndex() async throws {
        let scratch = try ScratchDirectory()
        let (tar, files) = try sampleTar()
        let blob = try await gzipCommand(tar, in: scratch)
        let layer = IndexedLayerFixture(blob: blob, spanSize: 256 << 10)
        let indexed = try layer.open()
        #expect(indexed.diffID == Digest.sha256(of: tar))
        #expect(layer.index.uncompressedSize == Int64(tar.count))
        #expect(layer.index.checkpoints.count > 8, "a span of 256 KiB over a \(tar.count)-byte tar")
        for (name, content) in files {
            #expect(try layer.read(name, from: indexed) == content, "\(name)")
        }
        let link = try #require(indexed.chunk(for: "links/hard", at: 0))
        #expect(link.name == "data/big.bin")
        // Chunks are cut at checkpoints too: each lies in one span, so two chunks' ranges are equal or meet (spans
        // share at most the byte that holds a block's first bits).
        let ranges = Set(indexed.allChunks.map { $0.offset..<$0.nextOffset }).sorted { $0.lowerBound < $1.lowerBound }
        #expect(ranges.count == layer.index.checkpoints.count)
        for (previous, next) in zip(ranges, ranges.dropFirst()) {
            #expect(next.lowerBound >= previous.upperBound - 1, "\(previous) and \(next) overlap")
        }
    }

    @Test("a stream of several gzip members, one of them empty, reads back across the member boundaries")
    func severalMembers() async throws {
        let (tar, files) = try sampleTar()
        // Members cut at arbitrary bytes of the tar, not at entry boundaries, plus an empty member in the middle.
        let cuts = [0, 100_003, 1_900_000, tar.count]
        var blob: [UInt8] = []
        for (i, (from, to)) in zip(cuts, cuts.dropFirst()).enumerated() {
            blob += try gzip(data: Array(tar[from..<to]), level: 1)
            if i == 0 { blob += try gzip(data: [], level: 1) }
        }
        let layer = IndexedLayerFixture(blob: blob, spanSize: 64 << 10)
        let indexed = try layer.open()
        #expect(indexed.diffID == Digest.sha256(of: tar))
        for (name, content) in files {
            #expect(try layer.read(name, from: indexed) == content, "\(name)")
        }
    }

    @Test("the encoded index round-trips and stays small beside its layer")
    func encodedIndexRoundTrips() async throws {
        let (tar, _) = try sampleTar()
        let blob = try gzip(data: tar, level: 1)
        let layer = IndexedLayerFixture(blob: blob, spanSize: GzipIndex.defaultSpanSize)
        let encoded = try layer.index.encoded()
        #expect(try GzipIndex.decode(encoded) == layer.index)
        #expect(Double(encoded.count) < 0.02 * Double(blob.count), "\(encoded.count) bytes for a \(blob.count)-byte layer")
    }

    // MARK: Bad input

    @Test("a layer that is not what its descriptor says, or not gzip, or cut short, is not indexed")
    func unindexableLayers() throws {
        let (tar, _) = try sampleTar()
        let blob = try gzip(data: tar, level: 1)
        let wrongDigest = Descriptor(mediaType: MediaType.ociLayerGzip, digest: Digest.sha256(of: [1]), size: Int64(blob.count))
        #expect(throws: GzipIndexError.self) { try GzipIndexBuilder.build(layer: wrongDigest, next: chunks(blob)) }
        let truncated = Array(blob.prefix(blob.count / 2))
        #expect {
            try GzipIndexBuilder.build(layer: descriptor(truncated), next: chunks(truncated))
        } throws: { error in
            guard case GzipIndexError.unreadableLayer(let why) = error else { return false }
            return why.contains("truncated")
        }
        #expect(throws: GzipIndexError.self) { try GzipIndexBuilder.build(layer: descriptor(tar), next: chunks(tar)) }
    }

    @Test("an index whose checkpoints point past the blob, overlap, or carry a wrong-sized window is refused")
    func inconsistentCheckpoints() throws {
        let (tar, _) = try sampleTar()
        let layer = IndexedLayerFixture(blob: try gzip(data: tar, level: 1), spanSize: 64 << 10)
        var pastEnd = layer.index
        pastEnd.checkpoints[2].in = layer.descriptor.size + 10
        expectInvalid(pastEnd, layer, mentioning: "past the")
        var overlapping = layer.index
        overlapping.checkpoints[3].in = overlapping.checkpoints[2].in
        overlapping.checkpoints[3].bits = 0
        expectInvalid(overlapping, layer, mentioning: "overlap")
        var shortWindow = layer.index
        shortWindow.checkpoints[1].window = shortWindow.checkpoints[1].window.prefix(100)
        expectInvalid(shortWindow, layer, mentioning: "window")
        var outOfTar = layer.index
        let file = try #require(outOfTar.entries.firstIndex { $0.name == "data/text.txt" })
        outOfTar.entries[file].offset = layer.index.uncompressedSize
        expectInvalid(outOfTar, layer, mentioning: "outside")
    }

    @Test("an index for another layer is refused")
    func indexForAnotherLayer() throws {
        let (tar, _) = try sampleTar()
        let layer = IndexedLayerFixture(blob: try gzip(data: tar, level: 1), spanSize: 64 << 10)
        let other = try gzip(data: tar + [UInt8](repeating: 0, count: 1024), level: 1)
        #expect {
            try IndexedLayer(index: layer.index, layer: descriptor(other))
        } throws: { error in
            guard case GzipIndexError.invalidIndex(let why) = error else { return false }
            return why.contains("describes layer")
        }
    }

    @Test("fetched bytes that do not match a span digest are refused before they are inflated")
    func spanDigestMismatch() throws {
        let (tar, _) = try sampleTar()
        let layer = IndexedLayerFixture(blob: try gzip(data: tar, level: 1), spanSize: 64 << 10)
        let indexed = try layer.open()
        let chunk = try #require(indexed.chunk(for: "data/text.txt", at: 0))
        var compressed = Array(layer.blob[Int(chunk.offset)..<Int(chunk.nextOffset)])
        compressed[compressed.count / 2] ^= 0xff
        #expect {
            try indexed.decode([chunk], compressed: compressed, from: chunk.offset)
        } throws: { error in
            guard case GzipIndexError.layerMismatch(let why) = error else { return false }
            return why.contains("span")
        }
        var lying = layer.index
        lying.checkpoints[0].spanDigest = Digest.sha256(of: [0]).description
        let misled = try IndexedLayer(index: lying, layer: layer.descriptor)
        let first = try #require(misled.allChunks.first)
        #expect(throws: GzipIndexError.self) {
            try misled.decode([first], compressed: Array(layer.blob[Int(first.offset)..<Int(first.nextOffset)]), from: first.offset)
        }
    }

    @Test("reading the whole layer hands over every chunk, verified, and checks the layer's digest and diffID")
    func wholeReadVerifies() throws {
        let (tar, files) = try sampleTar()
        let layer = IndexedLayerFixture(blob: try gzip(data: tar, level: 1), spanSize: 64 << 10)
        var received: [String: [UInt8]] = [:]
        try layer.open().readWhole(next: chunks(layer.blob)) { chunk, bytes in received[chunk.name, default: []] += bytes }
        for (name, content) in files where !content.isEmpty { #expect(received[name] == content, "\(name)") }

        // An index that lies about a file's bytes, or about the whole stream's digest, is caught by the whole read.
        var lyingFile = layer.index
        let file = try #require(lyingFile.entries.firstIndex { $0.name == "data/module7.py" })
        lyingFile.entries[file].chunkDigest = Digest.sha256(of: [7]).description
        #expect {
            try IndexedLayer(index: lyingFile, layer: layer.descriptor).readWhole(next: chunks(layer.blob)) { _, _ in }
        } throws: { error in
            guard case GzipIndexError.layerMismatch(let why) = error else { return false }
            return why.contains("data/module7.py")
        }
        var lyingDiffID = layer.index
        lyingDiffID.diffID = Digest.sha256(of: [1]).description
        #expect {
            try IndexedLayer(index: lyingDiffID, layer: layer.descriptor).readWhole(next: chunks(layer.blob)) { _, _ in }
        } throws: { error in
            guard case GzipIndexError.layerMismatch(let why) = error else { return false }
            return why.contains("uncompressed digest")
        }
    }

    // MARK: Fixtures

    private func expectInvalid(_ index: GzipIndex, _ layer: IndexedLayerFixture, mentioning text: String) {
        #expect {
            try IndexedLayer(index: index, layer: layer.descriptor)
        } throws: { error in
            guard case GzipIndexError.invalidIndex(let why) = error else { return false }
            return why.contains(text)
        }
    }
}

/// A layer in memory with its index, read as a lazy mount reads it: a chunk's compressed range, then decode.
struct IndexedLayerFixture {
    let blob: [UInt8]
    let descriptor: Descriptor
    let index: GzipIndex

    init(blob: [UInt8], spanSize: Int64) {
        self.blob = blob
        descriptor = GzipIndexTests.descriptor(blob)
        index = try! GzipIndexBuilder.build(layer: descriptor, spanSize: spanSize, chunkSize: 1 << 20, next: chunks(blob))
    }

    func open() throws -> IndexedLayer { try IndexedLayer(index: index, layer: descriptor) }

    func read(_ name: String, from layer: IndexedLayer) throws -> [UInt8] {
        var out: [UInt8] = []
        while let chunk = layer.chunk(for: name, at: Int64(out.count)) {
            let compressed = Array(blob[Int(chunk.offset)..<Int(chunk.nextOffset)])
            let bytes = try layer.decode([chunk], compressed: compressed, from: chunk.offset)[0]
            #expect(Digest.sha256(of: bytes).description == chunk.chunkDigest)
            out += bytes
        }
        return out
    }
}

extension GzipIndexTests {
    static func descriptor(_ blob: [UInt8]) -> Descriptor {
        Descriptor(mediaType: MediaType.ociLayerGzip, digest: Digest.sha256(of: blob), size: Int64(blob.count))
    }
    func descriptor(_ blob: [UInt8]) -> Descriptor { Self.descriptor(blob) }
}

/// The blob in pieces of 100,000 bytes, as a download hands them over.
func chunks(_ blob: [UInt8]) -> () throws -> [UInt8]? {
    var at = 0
    return {
        guard at < blob.count else { return nil }
        let end = min(blob.count, at + 100_000)
        defer { at = end }
        return Array(blob[at..<end])
    }
}

/// A tar with directories, many small text files, a file of several chunks (random bytes then text), an empty
/// file, a symlink and a hard link; and the contents of its regular files by name.
func sampleTar() throws -> ([UInt8], [String: [UInt8]]) {
    var files: [String: [UInt8]] = [:]
    var writer = TarWriter()
    try writer.write(TarHeader(name: "data/", type: .directory, mode: 0o755))
    for i in 0..<300 {
        let text = Array((0..<(i * 37 % 5000)).map { "line \($0) of module \(i)\n" }.joined().utf8)
        files["data/module\(i).py"] = text
        try writer.write(TarHeader(name: "data/module\(i).py", type: .regular, mode: 0o644, size: Int64(text.count)), contents: text)
    }
    var state: UInt64 = 7
    var big = [UInt8](repeating: 0, count: 3 << 20)
    for i in big.indices {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        big[i] = UInt8(truncatingIfNeeded: state >> 33)
    }
    big += Array(String(repeating: "numbers and text ", count: 200_000).utf8)
    files["data/big.bin"] = big
    try writer.write(TarHeader(name: "data/big.bin", type: .regular, mode: 0o644, size: Int64(big.count)), contents: big)
    let text = Array("hello\n".utf8)
    files["data/text.txt"] = text
    try writer.write(TarHeader(name: "data/text.txt", type: .regular, mode: 0o644, size: Int64(text.count)), contents: text)
    files["data/empty"] = []
    try writer.write(TarHeader(name: "data/empty", type: .regular, mode: 0o644))
    try writer.write(TarHeader(name: "links/", type: .directory, mode: 0o755))
    try writer.write(TarHeader(name: "links/soft", type: .symbolicLink, mode: 0o777, linkName: "../data/text.txt"))
    try writer.write(TarHeader(name: "links/hard", type: .hardLink, mode: 0o644, linkName: "data/big.bin"))
    try writer.finish()
    return (writer.bytes, files)
}

/// The tar compressed by gzip(1) (zlib's deflate, as most images' layers are).
func gzipCommand(_ tar: [UInt8], in scratch: ScratchDirectory) async throws -> [UInt8] {
    let path = scratch.sub("layer.tar")
    FileManager.default.createFile(atPath: path, contents: Data(tar))
    try await runChecked("gzip", ["-6", "-n", path])
    return Array(try Data(contentsOf: URL(fileURLWithPath: path + ".gz")))
}
