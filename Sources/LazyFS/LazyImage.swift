import Blocking
import ContentStore
import EStargz
import Foundation
import GzipIndex
import Images
import ImageTree
import OCI

#if canImport(Glibc)
import Glibc
#endif

/// An image ready to be served lazily: its merged tree, its eStargz layers (TOCs only, verified) and, for layers
/// that are not eStargz, their extracted copies in the store's layer cache.
public final class LazyImage: Sendable {
    public let tree: ImageTree
    public let layers: [Int: LazyLayer]
    public let fetcher: ChunkFetcher
    /// Layers that had to be downloaded whole (neither eStargz nor with a usable gzip index).
    public let wholeLayers: Int
    /// Lazy layers served through a gzip index (the others are eStargz).
    public var indexedLayers: Int { layers.values.filter(\.isIndexed).count }

    init(tree: ImageTree, layers: [Int: LazyLayer], fetcher: ChunkFetcher, wholeLayers: Int) {
        self.tree = tree
        self.layers = layers
        self.fetcher = fetcher
        self.wholeLayers = wholeLayers
    }

    /// Reads each eStargz layer's footer and TOC (one tail request, a second only for a TOC larger than the tail)
    /// and checks the TOC against the layer's `toc.digest` annotation. A gzip layer with an entry in `indexes` is
    /// served through it once the index was checked against the layer. Other layers are downloaded, verified and
    /// extracted before this returns: the mount works for any image, lazily where the image allows it.
    ///
    /// With `onlyLayer`, the tree is that one layer of the image as an overlayfs lower directory
    /// (`ImageTree(overlayLower:)`), for a snapshotter that stacks the layers itself; with `expectedTOC` too, the
    /// manifest must annotate it with that TOC digest (what the snapshotter's caller was told).
    public static func open(
        _ image: any Image, onlyLayer: Digest? = nil, expectedTOC: Digest? = nil, indexes: [Digest: GzipIndex] = [:],
        prioritizedFiles: [String] = [], lazyOnly: Bool = false, store: ContentStore, cache: ChunkCache, counters: MountCounters,
        fetchTimeout: Duration, progress: @escaping ProgressHandler = { _ in }
    ) async throws -> LazyImage {
        let fetcher = ChunkFetcher(cache: cache, counters: counters, timeout: fetchTimeout)
        var lazyLayers: [Int: LazyLayer] = [:]
        var entries: [[LayerEntry]] = []
        var whole = 0
        var selected = Array(image.layers.enumerated())
        if let onlyLayer {
            selected = selected.filter { $0.element.descriptor.digest == onlyLayer }
            guard selected.count == 1 else {
                throw LazyFSError.mountFailed("\(image.manifestDescriptor.digest) has no layer \(onlyLayer)")
            }
            let annotated = selected[0].element.descriptor.annotations?[tocDigestAnnotation]
            if let expectedTOC, annotated != expectedTOC.description {
                throw LazyFSError.mountFailed(
                    "layer \(onlyLayer) has TOC digest \(annotated ?? "none") in \(image.manifestDescriptor.digest), not \(expectedTOC)")
            }
        }
        let lock = try await store.lockForWriting()
        defer { lock.release() }
        // Every TOC at once: each is a request (or a file read) and a JSON decode, and the mount waits for all.
        let readers = try await withThrowingTaskGroup(of: (Int, OpenedTOC).self) { group in
            for (index, layer) in selected {
                guard let annotation = layer.descriptor.annotations?[tocDigestAnnotation], let expected = try? Digest(annotation) else { continue }
                group.addTask { (index, try await openTOC(layer, expected: expected, cache: cache, counters: counters)) }
            }
            var readers: [Int: EStargzReader] = [:]
            for try await (index, opened) in group { readers[index] = opened.reader }
            return readers
        }
        for (index, layer) in selected {
            if let reader = readers[index] {
                let lazy = LazyLayer(index: index, layer: layer, map: .estargz(reader))
                lazyLayers[index] = lazy
                entries.append(LayerEntries.fromTOC(reader.toc, layer: index))
            } else if let indexed = Self.indexed(layer, indexes: indexes, progress: progress) {
                lazyLayers[index] = LazyLayer(index: index, layer: layer, map: .indexed(indexed), prioritizedFiles: prioritizedFiles)
                entries.append(LayerEntries.fromTOC(TOC(entries: indexed.entries), layer: index))
            } else {
                guard !lazyOnly else {
                    throw LazyFSError.mountFailed("layer \(layer.descriptor.digest) is neither eStargz nor served by a gzip index")
                }
                whole += 1
                let moved = try await layer.fetch(into: store, progress: progress)
                counters.update { $0.bytesFetched += moved }
                _ = try await Unpacker(store: store, progress: progress).cacheLayer(layer, position: index, of: image.layers.count)
                entries.append(try LayerEntries.fromDirectory(store.layerDirectory(layer.diffID)))
            }
        }
        let tree = onlyLayer == nil ? ImageTree(layers: entries) : ImageTree(overlayLower: entries.first ?? [])
        return LazyImage(tree: tree, layers: lazyLayers, fetcher: fetcher, wholeLayers: whole)
    }

    /// The layer's gzip index checked against it, or nil (and a message why, for an index that is not usable).
    private static func indexed(_ layer: any Layer, indexes: [Digest: GzipIndex], progress: ProgressHandler) -> IndexedLayer? {
        guard let index = indexes[layer.descriptor.digest] else { return nil }
        do {
            let indexed = try IndexedLayer(index: index, layer: layer.descriptor)
            guard indexed.diffID == layer.diffID else {
                throw GzipIndexError.invalidIndex("it gives diffID \(indexed.diffID), the image config \(layer.diffID)")
            }
            return indexed
        } catch {
            progress(.message("layer \(layer.descriptor.digest.short): \(error); pulling it whole"))
            return nil
        }
    }

    /// The tail of the blob holds the footer and usually the whole TOC.
    static let tailBytes: Int64 = 64 << 10

    private struct NeedsEarlierBytes: Error { var offset: Int64 }

    /// A reader whose TOC has been read: its range callback (the one thing not `Sendable` about it) is never
    /// called again, so it may move between tasks.
    private struct OpenedTOC: @unchecked Sendable {
        let reader: EStargzReader
    }

    /// The layer's footer and TOC: from the tail kept by an earlier mount of any image with this layer, else from
    /// the registry (kept for the next mount). Either way checked against the `toc.digest` annotation.
    private static func openTOC(
        _ layer: any Layer, expected: Digest, cache: ChunkCache, counters: MountCounters
    ) async throws -> OpenedTOC {
        let blob = layer.descriptor
        // The kept tail is a file in the store, so its recorded start is checked like any other outside number.
        // Decoding a TOC is CPU work (a large layer's is megabytes of JSON): off the pool, and so in parallel.
        let kept = await runBlocking { () -> OpenedTOC? in
            guard let (start, bytes) = cache.tail(of: blob.digest), start >= 0, start <= blob.size,
                Int64(bytes.count) == blob.size - start, let reader = try? reader(blob, tail: bytes, from: start),
                (try? reader.verifyTOC(expected)) != nil
            else { return nil }
            return OpenedTOC(reader: reader)
        }
        if let kept { return kept }
        var start = max(0, blob.size - tailBytes)
        while true {
            let bytes = try await layer.read(ranges: [start..<blob.size]).first ?? []
            counters.update {
                $0.requests += 1
                $0.bytesFetched += Int64(bytes.count)
                $0.tocBytesFetched += Int64(bytes.count)
            }
            do {
                let from = start
                return try await runBlocking {
                    let reader = try reader(blob, tail: bytes, from: from)
                    try reader.verifyTOC(expected)
                    try? cache.storeTail(of: blob.digest, bytes: bytes, from: from)
                    return OpenedTOC(reader: reader)
                }
            } catch let more as NeedsEarlierBytes where more.offset < start {
                start = more.offset
            }
        }
    }

    /// A reader over the bytes `[start, size)` of the layer; asks for earlier bytes by throwing `NeedsEarlierBytes`.
    private static func reader(_ layer: Descriptor, tail bytes: [UInt8], from start: Int64) throws -> EStargzReader {
        try EStargzReader(blobSize: layer.size, layer: layer.digest.description) { offset, count in
            guard offset >= start else { throw NeedsEarlierBytes(offset: offset) }
            let from = Int(offset - start)
            guard count >= 0, from <= bytes.count, count <= bytes.count - from else { throw EStargzError.invalidFooter("read past the end of the blob") }
            return Array(bytes[from..<(from + count)])
        }
    }

    /// Up to `size` bytes of the file `node` from `offset`: fewer at the end of the file, none from past it (as
    /// the kernel answers a read there), whatever `offset + size` adds up to.
    public func read(_ node: ImageTree.Node, offset: Int64, size: Int) throws -> [UInt8] {
        guard offset >= 0, size >= 0 else {
            throw LazyFSError.invalidRead(what: "a read of \(size) bytes at offset \(offset)")
        }
        let (requestedEnd, overflow) = offset.addingReportingOverflow(Int64(size))
        let end = overflow ? node.size : min(node.size, requestedEnd)
        guard offset < end else { return [] }
        switch node.content {
        case .local(let path):
            return try Self.readLocal(path, offset: offset, length: Int(end - offset))
        case .bytes(let bytes):
            let upper = Int(min(end, Int64(bytes.count)))
            return Int(offset) < upper ? Array(bytes[Int(offset)..<upper]) : []
        case .estargz(let layerIndex, let name):
            guard let layer = layers[layerIndex] else { throw LazyFSError.fetchFailed(what: name, reason: "layer \(layerIndex) not open") }
            if let rejection = layer.rejection.withLock({ $0 }) { throw LazyFSError.fetchFailed(what: name, reason: rejection) }
            var result: [UInt8] = []
            result.reserveCapacity(Int(end - offset))
            var position = offset
            while position < end {
                guard let chunk = layer.chunk(for: name, at: position) else {
                    throw LazyFSError.fetchFailed(what: name, reason: "no chunk at offset \(position)")
                }
                let within = position - chunk.chunkOffset
                let count = min(end - position, chunk.chunkSize - within)
                result += try fetcher.read(
                    chunk, of: layer, offset: Int(within), length: Int(count), readAhead: { readAhead(after: chunk, in: layer) })
                position += count
            }
            return result
        case nil:
            return []
        }
    }

    /// The lazily served file at `path` (as a profile names it), its layer and its chunks in order; nil for a path
    /// the image does not have, or whose file is local or empty.
    public func chunks(ofFile path: String) -> (layer: LazyLayer, chunks: [EStargzChunk])? {
        guard let node = tree.node(at: cleanEntryName(path)), case .estargz(let index, let name) = node.content,
            let layer = layers[index]
        else { return nil }
        var chunks: [EStargzChunk] = []
        var position: Int64 = 0
        while position < node.size, let chunk = layer.chunk(for: name, at: position), chunk.chunkSize > 0 {
            chunks.append(chunk)
            position = chunk.chunkOffset + chunk.chunkSize
        }
        return chunks.isEmpty ? nil : (layer, chunks)
    }

    /// What to fetch with a missing chunk: the rest of its file up to one request's worth (files are mostly read
    /// front to back), and, when this miss starts where the previous one's fetch ended, the files after it in
    /// the blob too. A layer's files are in directory order, so a program that reads one file of a directory
    /// after another (Python importing a package) reads the blob forward; as with the kernel's readahead, the
    /// window doubles while that goes on (up to `maxNeighbourBytes`) and closes at the first scattered read.
    private func readAhead(after chunk: EStargzChunk, in layer: LazyLayer) -> ArraySlice<EStargzChunk> {
        guard let at = layer.position(of: chunk) else { return [] }
        let window = layer.lastMiss.withLock { last -> Int64 in
            let sequential = chunk.offset >= last.end && chunk.offset - last.end <= Self.sequentialSlack
            return sequential ? min(max(last.window * 2, Self.firstNeighbourBytes), Self.maxNeighbourBytes) : 0
        }
        var last = at
        while last + 1 < layer.chunks.count, layer.chunks[last + 1].name == chunk.name,
            layer.chunks[last + 1].nextOffset - chunk.offset <= ChunkFetcher.maxSpan
        {
            last += 1
        }
        let fileRegionEnd = layer.chunks[last].nextOffset
        while window > 0, last + 1 < layer.chunks.count, layer.chunks[last + 1].nextOffset <= fileRegionEnd + window { last += 1 }
        let end = layer.chunks[last].nextOffset
        layer.lastMiss.withLock { $0 = (end, window) }
        return layer.chunks[(at + 1)..<(last + 1)]
    }

    /// A miss this close after the previous fetch's end still counts as reading forward.
    static let sequentialSlack: Int64 = 64 << 10
    static let firstNeighbourBytes: Int64 = 128 << 10
    static let maxNeighbourBytes: Int64 = 2 << 20

    private static func readLocal(_ path: String, offset: Int64, length: Int) throws -> [UInt8] {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw LazyFSError.io(path: path, errno: errno) }
        defer { close(fd) }
        guard let bytes = readFully(fd, offset: offset, length: length) else { throw LazyFSError.io(path: path, errno: errno) }
        return bytes
    }
}
