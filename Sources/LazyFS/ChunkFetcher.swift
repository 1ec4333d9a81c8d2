import EStargz
import Foundation
import OCI
import Synchronization

/// Gets chunks into the chunk cache: contiguous chunks in one Range request, each chunk decompressed and checked
/// against its chunkDigest before it is stored, a chunk already being fetched waited for rather than fetched again.
/// Reads that block on the network count as foreground; the prefetcher yields to them.
public final class ChunkFetcher: Sendable {
    let cache: ChunkCache
    let counters: MountCounters
    /// How long a read may wait for the registry before it fails with EIO.
    let timeout: Duration
    /// Upper bound of one request, so a prefetch never holds a connection for long.
    public static let maxSpan: Int64 = 8 << 20

    private final class Pending: @unchecked Sendable {
        // `finished` and `failure` are guarded by `condition`.
        let condition = NSCondition()
        var finished = false
        var failure: Error?

        func complete(_ error: Error?) {
            condition.lock()
            finished = true
            failure = error
            condition.broadcast()
            condition.unlock()
        }

        func wait(until deadline: Date, what: String) throws {
            condition.lock()
            defer { condition.unlock() }
            while !finished {
                guard condition.wait(until: deadline) else {
                    throw LazyFSError.timedOut(what: what, seconds: 0)
                }
            }
            if let failure { throw failure }
        }
    }

    private let inFlight = Mutex<[String: Pending]>([:])
    private let foregroundReads = Atomic<Int>(0)

    public init(cache: ChunkCache, counters: MountCounters, timeout: Duration) {
        self.cache = cache
        self.counters = counters
        self.timeout = timeout
    }

    /// Whether a read is waiting for the network right now.
    public var foregroundBusy: Bool { foregroundReads.load(ordering: .relaxed) > 0 }

    /// `length` bytes from `offset` inside `chunk`'s data; fetches the chunk, with the chunks `readAhead` names
    /// (asked only on a miss), when it is not cached.
    public func read(
        _ chunk: EStargzChunk, of layer: LazyLayer, offset: Int, length: Int, readAhead: () -> ArraySlice<EStargzChunk>
    ) throws -> [UInt8] {
        let digest = try Self.digest(chunk)
        if let bytes = cache.read(digest, offset: offset, length: length) {
            counters.update { $0.cacheHits += 1 }
            return bytes
        }
        foregroundReads.add(1, ordering: .relaxed)
        defer { foregroundReads.subtract(1, ordering: .relaxed) }
        counters.update { $0.blockingReads += 1 }
        do {
            try ensureCached([chunk] + readAhead(), of: layer, deadline: Date() + timeout.seconds)
            guard let bytes = cache.read(digest, offset: offset, length: length) else {
                throw LazyFSError.fetchFailed(what: chunk.name, reason: "chunk \(digest.short) vanished from the cache")
            }
            return bytes
        } catch {
            counters.update { $0.failedReads += 1 }
            throw error
        }
    }

    /// Fetches whichever of `chunks` are neither cached nor being fetched, and waits for those being fetched.
    /// `maxSpan` bounds one request.
    public func ensureCached(_ requested: [EStargzChunk], of layer: LazyLayer, deadline: Date, maxSpan: Int64 = ChunkFetcher.maxSpan) throws {
        var mine: [(EStargzChunk, Pending)] = []
        var others: [(EStargzChunk, Pending)] = []
        var seen: Set<String> = []
        var failure: Error?
        // An indexed layer's span holds many files and is fetched and inflated whole for any one of them: the
        // others ride along (claimed like the rest, so a read of one of them meanwhile waits for this fetch
        // instead of fetching the span again), but nobody waits for a rider another fetch has claimed.
        let riders = layer.riders(of: requested)
        let chunks = requested + riders
        let riderDigests = Set(riders.map(\.chunkDigest)).subtracting(requested.map(\.chunkDigest))
        for chunk in chunks where seen.insert(chunk.chunkDigest).inserted {
            let digest = try Self.digest(chunk)
            // The reader refused any layer with such a chunk when it opened; checked again because this is what
            // bounds the memory a fetch takes, and a bad chunk must fail alone, not the fetch of its neighbours.
            do {
                try EStargzReader.checkCompressedRange(of: chunk, payloadEnd: layer.payloadEnd)
                _ = try EStargzReader.checkedInflatedSize(of: chunk)
            } catch {
                if !riderDigests.contains(chunk.chunkDigest) {
                    failure = failure ?? LazyFSError.fetchFailed(what: "\(chunk.name) in layer \(layer.descriptor.digest.short)", reason: "\(error)")
                }
                continue
            }
            if cache.contains(digest) { continue }
            inFlight.withLock { map in
                if let pending = map[chunk.chunkDigest] {
                    if !riderDigests.contains(chunk.chunkDigest) { others.append((chunk, pending)) }
                } else {
                    let pending = Pending()
                    map[chunk.chunkDigest] = pending
                    mine.append((chunk, pending))
                }
            }
        }
        let spans = Self.spans(mine.sorted { $0.0.offset < $1.0.offset }, maxSpan: maxSpan)
        // Separate runs go out together as one multi-range request.
        for group in Self.requests(spans) {
            var groupError: Error?
            do {
                try fetch(group.map { $0.map(\.0) }, of: layer, deadline: deadline)
            } catch {
                groupError = error
                failure = failure ?? error
            }
            inFlight.withLock { map in for span in group { for (chunk, _) in span { map[chunk.chunkDigest] = nil } } }
            for span in group { for (_, pending) in span { pending.complete(groupError) } }
        }
        for (chunk, pending) in others {
            try pending.wait(until: deadline, what: "\(chunk.name) in layer \(layer.descriptor.digest.short)")
        }
        if let failure { throw failure }
    }

    /// Runs of chunks whose compressed ranges touch or overlap (an indexed layer's chunks share spans, and
    /// neighbouring spans may share a byte), each at most `maxSpan` bytes (or one chunk).
    private static func spans(_ claimed: [(EStargzChunk, Pending)], maxSpan: Int64) -> [[(EStargzChunk, Pending)]] {
        var result: [[(EStargzChunk, Pending)]] = []
        var runEnd: Int64 = 0
        for item in claimed {
            if let first = result.last?.first?.0, item.0.offset <= runEnd, max(runEnd, item.0.nextOffset) - first.offset <= maxSpan {
                result[result.count - 1].append(item)
                runEnd = max(runEnd, item.0.nextOffset)
            } else {
                result.append([item])
                runEnd = item.0.nextOffset
            }
        }
        return result
    }

    /// The runs grouped into requests of at most `rangesPerRequest` ranges that do not overlap (a registry may
    /// answer overlapping ranges with the whole blob); runs are in blob order, so only neighbours can overlap.
    private static func requests<Run>(_ runs: [[(EStargzChunk, Run)]]) -> [[[(EStargzChunk, Run)]]] {
        var requests: [[[(EStargzChunk, Run)]]] = []
        var end: Int64 = .min
        for run in runs {
            guard let first = run.first?.0 else { continue }
            if requests.isEmpty || requests[requests.count - 1].count == rangesPerRequest || first.offset < end {
                requests.append([])
            }
            requests[requests.count - 1].append(run)
            end = run.map(\.0.nextOffset).max() ?? end
        }
        return requests
    }

    /// Ranges in one request; more would make the Range header long for little gain.
    static let rangesPerRequest = 16

    /// One request for the runs of chunks (a range per run); each run is decoded, its chunks verified and cached.
    private func fetch(_ spans: [[EStargzChunk]], of layer: LazyLayer, deadline: Date) throws {
        let ranges = spans.compactMap { span -> Range<Int64>? in
            guard let first = span.first, let end = span.map(\.nextOffset).max() else { return nil }
            return first.offset..<end
        }
        let fetched = try fetchRanges(of: layer.layer, ranges: ranges, deadline: deadline)
        guard fetched.count == ranges.count else {
            throw LazyFSError.fetchFailed(
                what: "\(ranges.count) ranges of \(layer.descriptor.digest.short)", reason: "the registry answered \(fetched.count) parts")
        }
        for (span, (range, bytes)) in zip(spans, zip(ranges, fetched)) {
            guard Int64(bytes.count) == Int64(range.count) else {
                throw LazyFSError.fetchFailed(
                    what: "bytes \(range.lowerBound)-\(range.upperBound - 1) of \(layer.descriptor.digest.short)",
                    reason: "the registry answered \(bytes.count) bytes")
            }
            let decoded: [[UInt8]]
            do {
                decoded = try layer.decode(span, compressed: bytes, from: range.lowerBound)
            } catch {
                let what = span.count == 1 ? span[0].name : "\(span.count) chunks from \(span[0].name)"
                throw LazyFSError.fetchFailed(what: "\(what) in layer \(layer.descriptor.digest.short)", reason: "\(error)")
            }
            for (chunk, data) in zip(span, decoded) {
                try cache.store(try Self.digest(chunk), bytes: data)
                counters.update { $0.chunksFetched += 1 }
            }
        }
    }

    /// Byte ranges of a layer's blob in one request, retried with backoff until `deadline`.
    func fetchRanges(of layer: any Layer, ranges: [Range<Int64>], deadline: Date) throws -> [[UInt8]] {
        let blob = layer.descriptor
        var attempt = 0
        var lastError: Error?
        let what = ranges.count == 1
            ? "bytes \(ranges[0].lowerBound)-\(ranges[0].upperBound - 1) of \(blob.digest.short)"
            : "\(ranges.count) ranges of \(blob.digest.short)"
        while true {
            let remaining = deadline.timeIntervalSinceNow
            guard remaining > 0 else {
                throw LazyFSError.fetchFailed(what: what, reason: "gave up after \(attempt) attempts: \(lastError.map { "\($0)" } ?? "timed out")")
            }
            counters.update { $0.requests += 1 }
            do {
                let parts = try waitForAsync(timeout: .seconds(remaining), what: what) {
                    try await layer.read(ranges: ranges)
                }
                counters.update { $0.bytesFetched += parts.reduce(0) { $0 + Int64($1.count) } }
                return parts
            } catch {
                lastError = error
                attempt += 1
                let pause = min(2.0, 0.05 * Double(1 << min(attempt, 6)))
                if deadline.timeIntervalSinceNow > pause { Thread.sleep(forTimeInterval: pause) }
            }
        }
    }

    static func digest(_ chunk: EStargzChunk) throws -> Digest {
        do {
            return try Digest(chunk.chunkDigest)
        } catch {
            throw LazyFSError.fetchFailed(what: chunk.name, reason: "chunk without a valid chunkDigest")
        }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
