import CLinux
import EStargz
import Foundation
import GzipIndex
import Synchronization

/// What a mount fetches before it is asked.
public enum PrefetchMode: String, Sendable, CaseIterable, Codable {
    /// Only what reads need.
    case none
    /// Each layer's prioritized region (before `.prefetch.landmark`), one request per layer.
    case landmark
    /// The prioritized regions first, then every other chunk in the background. Background requests wait while a
    /// read is waiting for the network, so reads always go first, and the link never idles: the whole image is
    /// local no later than a full pull would have it.
    case all
}

/// Runs the prefetch on its own thread (it blocks on the network like a FUSE read does).
public final class Prefetcher: Sendable {
    let image: LazyImage
    let mode: PrefetchMode
    let counters: MountCounters
    private let stopped = Atomic<Bool>(false)
    /// The background workers' shared position in the image.
    private let cursor = Mutex(Cursor())

    /// The start-up profile's files, in the order the workload first opened them, each with its layer.
    let profile: [(layer: LazyLayer, chunks: [EStargzChunk])]

    public init(image: LazyImage, mode: PrefetchMode, counters: MountCounters, profile: [(layer: LazyLayer, chunks: [EStargzChunk])] = []) {
        self.image = image
        self.mode = mode
        self.counters = counters
        self.profile = profile
    }

    /// Entered while the prefetch runs.
    private let running = DispatchGroup()

    /// Starts the prefetch; `finished` runs once it is done (at once for `.none`), unless it was stopped.
    public func start(finished: @escaping @Sendable () -> Void = {}) {
        guard mode != .none else {
            counters.update { $0.prefetchFinished = true }
            finished()
            return
        }
        running.enter()
        let thread = Thread { [self] in
            run()
            running.leave()
            if !stopped.load(ordering: .relaxed) { finished() }
        }
        thread.name = "slipway-prefetch"
        thread.start()
    }

    public func stop() { stopped.store(true, ordering: .relaxed) }

    /// Blocks until the prefetch has finished or was stopped.
    public func waitUntilFinished() { running.wait() }

    private var layers: [LazyLayer] { image.layers.keys.sorted().compactMap { image.layers[$0] } }

    private func run() {
        let profiled = Set(profile.flatMap { $0.chunks.map(\.chunkDigest) })
        let landmarkChunks = layers.map { layer in (layer, layer.prioritized.filter { !profiled.contains($0.chunkDigest) }) }
        // Indexed layers are read whole instead, which verifies them (`readWhole`).
        let wholeReads = mode == .all ? layers.filter(\.isIndexed) : []
        let restChunks = mode == .all ? layers.filter { !$0.isIndexed }.map { layer in (layer, Self.rest(of: layer, besides: profiled)) } : []
        let total = (profile + landmarkChunks + restChunks).reduce(Int64(0)) { sum, pair in sum + LazyLayer.compressedBytes(of: pair.1) }
            + wholeReads.reduce(0) { $0 + $1.descriptor.size }
        counters.update { $0.prefetchTotal = total }

        // The recorded start-up first, in the order the workload opened its files, whatever layer each is in. Files
        // go out in batches per layer that double from 256 KiB, as the prioritized regions below do, so the first
        // files arrive at once; a batch's scattered chunks share multi-range requests. Two batches are in flight
        // at a time, so one's decompression and hashing overlaps the next one's transfer.
        var batches: [(layer: LazyLayer, chunks: [EStargzChunk])] = []
        var batchSpan: Int64 = 256 << 10
        var batchBytes: Int64 = 0
        for (layer, chunks) in profile {
            // A file's chunks are in order; files of a batch are not.
            let bytes = LazyLayer.compressedBytes(of: chunks)
            if let current = batches.last, current.layer === layer, batchBytes < batchSpan {
                batches[batches.count - 1].chunks += chunks
                batchBytes += bytes
            } else {
                if !batches.isEmpty { batchSpan = min(batchSpan * 2, ChunkFetcher.maxSpan) }
                batches.append((layer, chunks))
                batchBytes = bytes
            }
        }
        let nextBatch = Mutex(0)
        let profileBatches = batches
        DispatchQueue.concurrentPerform(iterations: Self.backgroundWorkers) { _ in
            while !stopped.load(ordering: .relaxed) {
                let index = nextBatch.withLock { next -> Int in
                    defer { next += 1 }
                    return next
                }
                guard index < profileBatches.count else { return }
                let batch = profileBatches[index]
                fetch(batch.chunks.sorted { $0.offset < $1.offset }, of: batch.layer, yielding: false)
            }
        }

        // The prioritized region of each layer first: the workload is about to read exactly these files, in this
        // order. Not in one request, as stargz-snapshotter does: a read of the first file would wait for the whole
        // region. Requests double from 256 KiB, so the first files arrive at once and the rest in a few requests.
        for (layer, chunks) in landmarkChunks where !chunks.isEmpty {
            var start = 0
            var span: Int64 = 256 << 10
            while start < chunks.count, !stopped.load(ordering: .relaxed) {
                let end = Self.end(of: chunks, from: start, within: span)
                fetch(Array(chunks[start..<end]), of: layer, yielding: false)
                start = end
                span = min(span * 2, ChunkFetcher.maxSpan)
            }
        }
        // The rest in requests sized to take about 100 ms at the measured rate, so a read that arrives meanwhile
        // shares the link with at most that much background traffic. On a slow link the background also waits
        // while a read waits for the network; on a fast one, reads are bound by latency, not bandwidth, and
        // pausing would only leave the link idle. Two workers, so decompressing, verifying and storing one
        // request's chunks overlaps the next request's transfer.
        let workers = DispatchGroup()
        if !wholeReads.isEmpty {
            // One layer after another, in image order (the base layers, which start-up reads, first): one stream
            // beside the reads' requests, which it yields to, rather than a stream per layer competing with them.
            workers.enter()
            let thread = Thread { [self] in
                // Inflating and hashing a whole layer is CPU the workload may need more: it goes second.
                _ = slipway_lower_thread_priority(10)
                for layer in wholeReads where !stopped.load(ordering: .relaxed) { readWhole(layer) }
                workers.leave()
            }
            thread.name = "slipway-verify"
            thread.start()
        }
        for _ in 0..<Self.backgroundWorkers {
            workers.enter()
            let thread = Thread { [self] in
                // What nobody asked for yet: decompressing and hashing it must not take the cores from the workload
                // whose start it is meant to speed up.
                _ = slipway_lower_thread_priority(10)
                drain(restChunks)
                workers.leave()
            }
            thread.name = "slipway-prefetch"
            thread.start()
        }
        workers.wait()
        counters.update { $0.prefetchFinished = true }
    }

    private struct Stopped: Error {}

    /// Reads an indexed layer front to back in requests that double up to `ChunkFetcher.maxSpan`, caching every
    /// chunk not cached yet, and checks the layer's digest and diffID at the end. A layer that does not match is
    /// rejected: its reads fail (EIO) from then on. A network failure rejects nothing: reads fetch what they need.
    private func readWhole(_ layer: LazyLayer) {
        guard case .indexed(let indexed) = layer.map else { return }
        let fetcher = image.fetcher
        let size = layer.descriptor.size
        // A node redeploying an image whose layer it verified before, with every chunk still cached, moves nothing.
        if fetcher.cache.isVerified(layer: layer.descriptor.digest, index: indexed.indexDigest),
            layer.chunks.allSatisfy({ (try? ChunkFetcher.digest($0)).map(fetcher.cache.contains) ?? false })
        {
            counters.update {
                $0.layersVerified += 1
                $0.prefetchDone += size
            }
            return
        }
        var offset: Int64 = 0
        var span: Int64 = 1 << 20
        do {
            try indexed.readWhole(next: { [self] in
                guard offset < size else { return nil }
                guard !stopped.load(ordering: .relaxed) else { throw Stopped() }
                // Reads waiting for the network go first.
                while fetcher.foregroundBusy, !stopped.load(ordering: .relaxed) {
                    Thread.sleep(forTimeInterval: 0.005)
                }
                let end = min(size, offset + span)
                let parts = try fetcher.fetchRanges(
                    of: layer.layer, ranges: [offset..<end], deadline: Date() + max(60, fetcher.timeout.seconds * 4))
                guard let bytes = parts.first, Int64(bytes.count) == end - offset else {
                    throw LazyFSError.fetchFailed(what: "bytes \(offset)-\(end - 1) of \(layer.descriptor.digest.short)", reason: "short answer")
                }
                counters.update { $0.prefetchDone += end - offset }
                offset = end
                span = min(ChunkFetcher.maxSpan, span * 2)
                return bytes
            }, store: { chunk, bytes in
                let digest = try ChunkFetcher.digest(chunk)
                guard !fetcher.cache.contains(digest) else { return }
                try fetcher.cache.store(digest, bytes: bytes)
                counters.update { $0.chunksFetched += 1 }
            })
            counters.update { $0.layersVerified += 1 }
            try? fetcher.cache.markVerified(layer: layer.descriptor.digest, index: indexed.indexDigest)
        } catch let mismatch as GzipIndexError {
            layer.rejection.withLock { $0 = "layer \(layer.descriptor.digest.short) does not match: \(mismatch)" }
            counters.update { $0.layersRejected += 1 }
        } catch {
            // Stopped, or the registry failed for long: nothing is known to be wrong with the layer.
        }
    }

    /// The layer's chunks that are neither prioritized nor profiled, in blob order.
    private static func rest(of layer: LazyLayer, besides profiled: Set<String>) -> [EStargzChunk] {
        let first = Set(layer.prioritized.map(\.chunkDigest)).union(profiled)
        return layer.chunks.filter { !first.contains($0.chunkDigest) }
    }

    private struct Cursor {
        var layer = 0
        var start = 0
        var span: Int64 = 1 << 20
        /// Bytes per second over all workers, as last measured.
        var rate = 0.0
    }

    static let backgroundWorkers = 2

    private func drain(_ rest: [(LazyLayer, [EStargzChunk])]) {
        while !stopped.load(ordering: .relaxed) {
            let next = cursor.withLock { c -> (LazyLayer, [EStargzChunk], Bool)? in
                while c.layer < rest.count, c.start >= rest[c.layer].1.count {
                    c.layer += 1
                    c.start = 0
                }
                guard c.layer < rest.count else { return nil }
                let chunks = rest[c.layer].1
                let end = Self.end(of: chunks, from: c.start, within: c.span)
                defer { c.start = end }
                return (rest[c.layer].0, Array(chunks[c.start..<end]), c.rate < Self.fastLink)
            }
            guard let (layer, chunks, yielding) = next else { return }
            let (bytes, seconds) = fetch(chunks, of: layer, yielding: yielding)
            let rate = Double(bytes) / max(0.001, seconds)
            cursor.withLock { c in
                c.rate = rate * Double(Self.backgroundWorkers)
                c.span = min(ChunkFetcher.maxSpan, max(256 << 10, Int64(rate * Self.backgroundRequestSeconds)))
            }
        }
    }

    static let backgroundRequestSeconds = 0.1
    /// Bytes per second above which the background fetch does not pause for reads.
    static let fastLink = 50e6

    /// The end of the run of chunks from `start` that spans at most `span` compressed bytes (at least one chunk).
    static func end(of chunks: [EStargzChunk], from start: Int, within span: Int64) -> Int {
        var end = start + 1
        while end < chunks.count, chunks[end].nextOffset - chunks[start].offset <= span { end += 1 }
        return end
    }

    /// Returns the compressed bytes the chunks span and the seconds the fetch took (after any wait for reads).
    @discardableResult
    private func fetch(_ chunks: [EStargzChunk], of layer: LazyLayer, yielding: Bool) -> (bytes: Int64, seconds: Double) {
        while yielding && image.fetcher.foregroundBusy && !stopped.load(ordering: .relaxed) { Thread.sleep(forTimeInterval: 0.005) }
        let began = ContinuousClock.now
        let bytes = LazyLayer.compressedBytes(of: chunks)
        // A failed prefetch is not an error: a read that needs the chunk fetches it again and reports its failure.
        try? image.fetcher.ensureCached(chunks, of: layer, deadline: Date() + max(60, image.fetcher.timeout.seconds * 4), maxSpan: .max)
        counters.update { $0.prefetchDone += bytes }
        return (bytes, began.duration(to: .now).seconds)
    }
}
