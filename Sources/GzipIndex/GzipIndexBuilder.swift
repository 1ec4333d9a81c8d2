import Archive
import EStargz
import Foundation
import OCI

/// Builds a layer's `GzipIndex` in one pass over its compressed bytes: inflate (recording checkpoints), walk the
/// tar (recording each entry and hashing each file's content), hash the blob and the uncompressed stream.
public enum GzipIndexBuilder {
    /// Indexes the gzip layer `layer` whose bytes `next` returns in order (nil at the end). Throws
    /// `unreadableLayer` for a stream that is not gzip or a tar inside, and `layerMismatch` when the bytes do not
    /// hash to `layer.digest` or are not `layer.size` long: an index is only ever built from verified bytes.
    /// `digestVerified`: the caller checks the digest of these very bytes itself (a cache fill), so they are not
    /// hashed twice; the index must then be kept only if that check passed.
    public static func build(
        layer: Descriptor, spanSize: Int64 = GzipIndex.defaultSpanSize, chunkSize: Int64 = GzipIndex.defaultChunkSize,
        digestVerified: Bool = false, next: @escaping () throws -> [UInt8]?
    ) throws -> GzipIndex {
        let inflater = try CheckpointingInflater(spanSize: spanSize, hashBlob: !digestVerified, input: next)
        let tar = TarReader(source: inflater)
        var entries: [TOCEntry] = []
        do {
            while let header = try tar.next() {
                let name = cleanEntryName(header.name)
                if name.isEmpty { continue }
                var entry = try TOCEntry(header: header, name: name)
                entry.offset = tar.offset
                guard entry.type == "reg", header.size > 0 else {
                    if entry.type == "hardlink" { entry.linkName = cleanEntryName(header.linkName) }
                    entries.append(entry)
                    continue
                }
                try appendFile(
                    entry, size: header.size, from: tar, chunkSize: chunkSize, lastCheckpoint: { inflater.checkpoints.last?.out }, to: &entries)
            }
            try inflater.drain()
        } catch let error as GzipIndexError {
            throw error
        } catch {
            throw GzipIndexError.unreadableLayer("\(error)")
        }
        guard inflater.consumed == layer.size, digestVerified || inflater.blobDigest == layer.digest else {
            throw GzipIndexError.layerMismatch(
                "read \(inflater.consumed) bytes with digest \(inflater.blobDigest?.description ?? "-"), expected \(layer.size) bytes with \(layer.digest)")
        }
        let index = GzipIndex(
            layer: Descriptor(mediaType: layer.mediaType, digest: layer.digest, size: layer.size), diffID: inflater.diffID,
            uncompressedSize: inflater.produced, spanSize: spanSize, chunkSize: chunkSize, checkpoints: inflater.checkpoints,
            entries: entries)
        // What a reader would refuse is not written: a stream whose deflate blocks are too long to checkpoint
        // within the span limit, or a tar with names a reader rejects.
        do {
            _ = try IndexedLayer(index: index, layer: index.layer)
        } catch {
            throw GzipIndexError.unreadableLayer("the layer cannot be indexed: \(error)")
        }
        return index
    }

    /// The file's entry (and `chunk` entries after it), each with the digest of its bytes; the first entry also
    /// carries the whole file's digest. A chunk ends every `chunkSize` bytes of the file and where a checkpoint
    /// falls inside it (`lastCheckpoint`, the output offset of the newest one), so that every chunk lies in one
    /// span: reading it never needs the span before, which a read of a neighbour may have fetched already.
    private static func appendFile(
        _ first: TOCEntry, size: Int64, from tar: TarReader, chunkSize: Int64, lastCheckpoint: () -> Int64?, to entries: inout [TOCEntry]
    ) throws {
        let firstIndex = entries.count
        var chunkHasher = DigestHasher()
        // Started only when a second chunk does: a file of one chunk is hashed once.
        var fileHasher: DigestHasher?
        var entry = first
        var inChunk: Int64 = 0
        var position: Int64 = 0
        func closeChunk() {
            if fileHasher == nil { fileHasher = chunkHasher }
            entry.chunkSize = inChunk
            entry.chunkDigest = chunkHasher.finalize().description
            entries.append(entry)
            chunkHasher = DigestHasher()
            var next = TOCEntry(name: first.name, type: "chunk")
            next.offset = first.offset + position
            next.chunkOffset = position
            entry = next
            inChunk = 0
        }
        try tar.readContents { bytes in
            var rest = bytes
            while !rest.isEmpty {
                let count = Int(min(Int64(rest.count), chunkSize - inChunk))
                let piece = UnsafeRawBufferPointer(rebasing: rest[..<count])
                chunkHasher.update(piece)
                fileHasher?.update(piece)
                inChunk += Int64(count)
                position += Int64(count)
                rest = UnsafeRawBufferPointer(rebasing: rest[count...])
                if inChunk == chunkSize, position < size { closeChunk() }
            }
            // The inflater hands out bytes up to each checkpoint it takes, so a checkpoint falls between pieces.
            if inChunk > 0, position < size, lastCheckpoint() == first.offset + position { closeChunk() }
        }
        guard position == size else {
            throw GzipIndexError.unreadableLayer("\(first.name): \(position) of \(size) bytes before the stream ended")
        }
        if fileHasher != nil {
            closeChunk()
            entries[firstIndex].digest = fileHasher!.finalize().description
        } else {
            // A file of one chunk: its chunk is the file (chunkSize 0, as eStargz writes a file's only chunk).
            let digest = chunkHasher.finalize().description
            entry.chunkSize = 0
            entry.digest = digest
            entry.chunkDigest = digest
            entries.append(entry)
        }
    }
}
