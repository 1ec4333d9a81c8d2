import EStargz
import Foundation
import GzipIndex
import OCI
import Synchronization

/// How a lazily served layer's files map to its compressed bytes.
public enum LayerChunkMap {
    /// An eStargz layer: its verified TOC; each chunk is a gzip member of its own.
    case estargz(EStargzReader)
    /// An ordinary gzip layer with a seekable index; a chunk is inflated from the checkpoint before it.
    case indexed(IndexedLayer)
}

/// A layer of a mounted image served lazily: where its files' chunks are, and the layer they come from.
public final class LazyLayer: @unchecked Sendable {
    // Immutable after init; an eStargz reader's own range callback is not used after the TOC was read.
    public let index: Int
    public let layer: any Layer
    public let map: LayerChunkMap
    /// Every chunk in blob order.
    public let chunks: [EStargzChunk]
    /// What the prefetch fetches first, in order: an eStargz layer's chunks before `.prefetch.landmark`, or the
    /// chunks of an indexed layer's prioritized files.
    public let prioritized: [EStargzChunk]
    /// Where the last read miss's fetch ended and how far past its file it read, to tell a scan through a
    /// directory's files (fetch more of the neighbours) from scattered reads (fetch only the file).
    let lastMiss = Mutex<(end: Int64, window: Int64)>((0, 0))
    /// Why the layer's bytes cannot be trusted (the background read of an indexed layer found them not to match its
    /// digest, diffID or index); reads of its files fail from then on.
    let rejection = Mutex<String?>(nil)

    public init(index: Int, layer: any Layer, map: LayerChunkMap, prioritizedFiles: [String] = []) {
        self.index = index
        self.layer = layer
        self.map = map
        switch map {
        case .estargz(let reader):
            chunks = reader.allChunks
            let landmark = reader.toc.entries.first { cleanEntryName($0.name) == prefetchLandmarkName }
            let prefetchSize = landmark?.offset ?? 0
            prioritized = chunks.filter { $0.offset < prefetchSize }
        case .indexed(let indexed):
            chunks = indexed.allChunks
            var seen: Set<String> = []
            prioritized = prioritizedFiles.flatMap { name -> [EStargzChunk] in
                guard seen.insert(name).inserted else { return [] }
                return indexed.chunksByName[cleanEntryName(name)] ?? []
            }
        }
    }

    public var descriptor: Descriptor { layer.descriptor }

    public var isIndexed: Bool { if case .indexed = map { true } else { false } }

    /// The layer's entries, eStargz TOC style.
    public var entries: [TOCEntry] {
        switch map {
        case .estargz(let reader): reader.toc.entries
        case .indexed(let indexed): indexed.entries
        }
    }

    /// Where chunks' compressed ranges must end: an eStargz layer's TOC, an indexed layer's end.
    var payloadEnd: Int64 {
        switch map {
        case .estargz(let reader): reader.tocOffset
        case .indexed(let indexed): indexed.payloadEnd
        }
    }

    public func chunk(for name: String, at offset: Int64) -> EStargzChunk? {
        switch map {
        case .estargz(let reader): reader.chunk(for: name, at: offset)
        case .indexed(let indexed): indexed.chunk(for: name, at: offset)
        }
    }

    /// The verified bytes of each of `run`'s chunks (in blob order, contiguous or overlapping), out of the
    /// layer's bytes from `start`.
    func decode(_ run: [EStargzChunk], compressed bytes: [UInt8], from start: Int64) throws -> [[UInt8]] {
        let data: [[UInt8]]
        switch map {
        case .estargz:
            data = try run.map { chunk in
                try EStargzReader.decompressChunk(chunk, compressed: Array(bytes[Int(chunk.offset - start)..<Int(chunk.nextOffset - start)]))
            }
        case .indexed(let indexed):
            data = try indexed.decode(run, compressed: bytes, from: start)
        }
        for (chunk, bytes) in zip(run, data) { try EStargzReader.verify(chunk, bytes: bytes) }
        return data
    }

    /// The chunks of an indexed layer that lie within the compressed ranges of `chunks` (the same spans), which
    /// the fetch of those ranges decodes anyway; none for an eStargz layer, whose chunks are members of their own.
    func riders(of chunks: [EStargzChunk]) -> [EStargzChunk] {
        guard isIndexed else { return [] }
        var result: [EStargzChunk] = []
        var covered: Int64 = .min
        for chunk in chunks.sorted(by: { $0.offset < $1.offset }) where chunk.nextOffset > covered {
            var index = firstChunk(atOrAfter: max(chunk.offset, covered))
            while index < self.chunks.count, self.chunks[index].offset < chunk.nextOffset {
                if self.chunks[index].nextOffset <= chunk.nextOffset { result.append(self.chunks[index]) }
                index += 1
            }
            covered = chunk.nextOffset
        }
        return result
    }

    /// The index in `chunks` of the first chunk whose compressed range starts at or after `offset`.
    private func firstChunk(atOrAfter offset: Int64) -> Int {
        var low = 0, high = chunks.count
        while low < high {
            let middle = (low + high) / 2
            if chunks[middle].offset < offset { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// Compressed bytes the chunks' ranges cover, counting bytes shared by several chunks (an indexed layer's
    /// span holds many files) once; `chunks` are in blob order.
    static func compressedBytes(of chunks: some Collection<EStargzChunk>) -> Int64 {
        var total: Int64 = 0
        var end: Int64 = .min
        for chunk in chunks {
            total += max(0, chunk.nextOffset - max(chunk.offset, end))
            end = max(end, chunk.nextOffset)
        }
        return total
    }

    /// The position of `chunk` in `chunks`.
    func position(of chunk: EStargzChunk) -> Int? {
        var index = firstChunk(atOrAfter: chunk.offset)
        while index < chunks.count, chunks[index].offset == chunk.offset {
            if chunks[index] == chunk { return index }
            index += 1
        }
        return nil
    }
}
