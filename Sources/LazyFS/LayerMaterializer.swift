import Archive
import Blocking
import CLinux
import ContentStore
import EStargz
import Foundation
import OCI

/// Writes an eStargz layer whose chunks have all arrived into the store as an overlayfs lower directory
/// (`ContentStore.materializedLayerDirectory(toc:)`), so the next lazy run or snapshot of any image with the layer
/// stacks it with the kernel's overlay and no FUSE in the path.
///
/// The layer's tar is rebuilt from the verified TOC and the verified chunks and goes through the same extractor as
/// a pulled layer (overlay whiteouts, path and link checks, devices, xattrs), so what lands on disk is what the lazy
/// mount served. The directory is published by rename once complete: a process killed half way leaves nothing a
/// later run would use.
public enum LayerMaterializer {
    /// The TOC digest a layer is materialized under: an eStargz layer's `toc.digest` annotation.
    public static func tocDigest(of layer: any Layer) -> Digest? {
        layer.descriptor.annotations?[tocDigestAnnotation].flatMap { try? Digest($0) }
    }

    /// Whether every chunk of an eStargz layer is in the cache, so materializing it fetches nothing.
    public static func isComplete(_ layer: LazyLayer, cache: ChunkCache) -> Bool {
        guard case .estargz = layer.map else { return false }
        // The landmarks are not files of the layer (nor of its materialized directory): nothing reads them.
        let landmarks: Set<String> = [prefetchLandmarkName, noPrefetchLandmarkName]
        return layer.chunks.allSatisfy { chunk in
            landmarks.contains(chunk.name) || (try? ChunkFetcher.digest(chunk)).map(cache.contains) ?? false
        }
    }

    /// Materializes the layer unless the store has it; true when this call wrote it. A chunk the cache lost
    /// meanwhile is fetched again (and verified) as a read would. `abandoned` is asked between files; once it says
    /// true, the half-written layer is removed and this throws. In the `background`, the work runs at nice 10.
    @discardableResult
    public static func materialize(
        _ layer: LazyLayer, fetcher: ChunkFetcher, store: ContentStore, background: Bool = true,
        abandoned: @escaping @Sendable () -> Bool = { false }
    ) async throws -> Bool {
        guard case .estargz(let reader) = layer.map, let toc = tocDigest(of: layer.layer), toc == reader.tocDigest else { return false }
        return try await store.ensureMaterializedLayer(toc: toc) { temporary in
            let stream = TOCTarStream(layer: layer, fetcher: fetcher, abandoned: abandoned)
            let source = ChunkSource(expectedSize: layer.descriptor.size) { try stream.next() }
            let name = layer.descriptor.digest.description
            _ = try await runBlocking {
                // Background work: the workload the mount serves needs the cores more (the decoding thread
                // the applier starts inherits this).
                if background { _ = slipway_lower_thread_priority(10) }
                return try LayerApplier.apply(from: source, compression: .none, to: temporary, options: ApplyOptions(whiteouts: .overlay), name: name)
            }
        }
    }
}

/// A layer's tar, rebuilt entry by entry from its TOC with each file's bytes from its verified chunks, handed out
/// in pieces of about 1 MiB (`ChunkSource`).
final class TOCTarStream: @unchecked Sendable {
    // Used by the one decompression thread `LayerApplier` pulls from.
    private let layer: LazyLayer
    private let fetcher: ChunkFetcher
    private let entries: [TOCEntry]
    private var writer: TarWriter
    private let output = OutputBuffer()
    private var entryIndex = 0
    /// The regular file being written and how far.
    private var file: (name: String, size: Int64, position: Int64)?
    private var finished = false
    private let abandoned: @Sendable () -> Bool

    private final class OutputBuffer: @unchecked Sendable {
        var bytes: [UInt8] = []
    }

    init(layer: LazyLayer, fetcher: ChunkFetcher, abandoned: @escaping @Sendable () -> Bool) {
        self.layer = layer
        self.fetcher = fetcher
        self.abandoned = abandoned
        self.entries = layer.entries
        let output = self.output
        self.writer = TarWriter { output.bytes += $0 }
    }

    func next() throws -> [UInt8]? {
        while output.bytes.isEmpty {
            if finished { return nil }
            try step()
        }
        defer { output.bytes = [] }
        return output.bytes
    }

    /// Writes one header, one chunk of the current file, or the end of the archive.
    private func step() throws {
        if abandoned() { throw CancellationError() }
        if let current = file {
            guard current.position < current.size else {
                file = nil
                return
            }
            guard let chunk = layer.chunk(for: current.name, at: current.position), chunk.chunkOffset == current.position,
                chunk.chunkSize > 0, chunk.chunkSize <= current.size - current.position
            else {
                throw LazyFSError.fetchFailed(what: current.name, reason: "its chunks do not cover it at offset \(current.position)")
            }
            let length = Int(chunk.chunkSize)
            let bytes = try fetcher.cache.read(try ChunkFetcher.digest(chunk), offset: 0, length: length)
                ?? fetcher.read(chunk, of: layer, offset: 0, length: length, readAhead: { [] })
            guard Int64(bytes.count) == chunk.chunkSize else {
                throw LazyFSError.fetchFailed(what: current.name, reason: "a chunk of \(bytes.count) bytes, not \(chunk.chunkSize)")
            }
            try writer.writeContents(bytes)
            file?.position += chunk.chunkSize
            return
        }
        guard entryIndex < entries.count else {
            try writer.finish()
            finished = true
            return
        }
        let entry = entries[entryIndex]
        entryIndex += 1
        guard let header = entry.tarHeader() else { return }
        guard header.size >= 0 else { throw LazyFSError.fetchFailed(what: header.name, reason: "negative size \(header.size)") }
        try writer.writeHeader(header)
        if header.type == .regular, header.size > 0 { file = (cleanEntryName(entry.name), header.size, 0) }
    }
}
