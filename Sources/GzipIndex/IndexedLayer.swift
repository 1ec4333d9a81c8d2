import Archive
import CZlib
import EStargz
import Foundation
import OCI

/// A gzip layer made readable from the middle by its index, once the index was checked against the layer: files
/// and their chunks (as eStargz chunks, so a lazy mount serves both kinds alike), and the decoding of a fetched run
/// of spans into chunk bytes.
///
/// A chunk's compressed range is the run of spans its bytes fall in; its `innerOffset` is where it starts in the
/// output of the first of those spans. Every span is checked against its digest before it is inflated, and the
/// caller checks each chunk against its `chunkDigest`.
public final class IndexedLayer: Sendable {
    public let layer: Descriptor
    public let diffID: Digest
    /// The digest of the index's content (sorted-key JSON), which names what a whole read verified.
    public let indexDigest: Digest
    /// The index's entries, names cleaned.
    public let entries: [TOCEntry]
    public let chunksByName: [String: [EStargzChunk]]
    public let hardLinks: [String: String]
    /// Every chunk, in blob order.
    public let allChunks: [EStargzChunk]
    let checkpoints: [GzipCheckpoint]
    /// Each checkpoint's span: `spanStarts[k]..<spanEnds[k]`, strictly increasing.
    let spanStarts: [Int64]
    let spanEnds: [Int64]

    /// Checks that `index` describes `layer` and is consistent (see `GzipIndexError.invalidIndex` messages); it is
    /// then safe to fetch and inflate what it points at.
    public init(index: GzipIndex, layer: Descriptor) throws {
        func invalid(_ why: String) -> GzipIndexError { .invalidIndex(why) }
        guard index.layer.digest == layer.digest, index.layer.size == layer.size else {
            throw invalid("it describes layer \(index.layer.digest) (\(index.layer.size) bytes), not \(layer.digest) (\(layer.size) bytes)")
        }
        guard let diffID = try? Digest(index.diffID) else { throw invalid("diffID \"\(index.diffID)\" is not a digest") }
        guard index.uncompressedSize >= 0 else { throw invalid("negative uncompressed size") }
        self.layer = layer
        self.diffID = diffID
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        indexDigest = Digest.sha256(of: Array(try encoder.encode(index)))
        checkpoints = index.checkpoints
        (spanStarts, spanEnds) = try Self.checkSpans(index.checkpoints, blobSize: layer.size, uncompressedSize: index.uncompressedSize)

        var entries: [TOCEntry] = []
        var links: [String: String] = [:]
        var chunks: [String: [EStargzChunk]] = [:]
        var files: [String: (start: Int64, size: Int64, covered: Int64)] = [:]
        for original in index.entries {
            var entry = original
            do {
                entry.name = try EStargzReader.safeTOCName(original.name, entry: original.name)
                if entry.type == "hardlink" {
                    entry.linkName = try EStargzReader.safeTOCName(original.linkName, entry: original.name)
                    links[entry.name] = entry.linkName
                }
            } catch {
                throw invalid("\(error)")
            }
            guard entry.size >= 0 else { throw invalid("\"\(entry.name)\": negative size") }
            switch entry.type {
            case "reg":
                let (end, overflow) = entry.offset.addingReportingOverflow(entry.size)
                guard entry.offset >= 0, !overflow, end <= index.uncompressedSize else {
                    throw invalid("\"\(entry.name)\": \(entry.size) bytes at \(entry.offset) are outside the \(index.uncompressedSize)-byte tar")
                }
                files[entry.name] = (entry.offset, entry.size, 0)
                chunks[entry.name] = []
                if entry.size > 0 { try Self.appendChunk(entry, file: &files, to: &chunks, index: index) }
                entries.append(entry)
            case "chunk":
                try Self.appendChunk(entry, file: &files, to: &chunks, index: index)
            case "dir", "symlink", "hardlink", "char", "block", "fifo":
                entries.append(entry)
            default:
                throw invalid("\"\(entry.name)\": unknown entry type \"\(entry.type)\"")
            }
        }
        for (name, file) in files where file.covered != file.size {
            throw invalid("\"\(name)\": its chunks cover \(file.covered) of its \(file.size) bytes")
        }
        self.entries = entries
        hardLinks = links
        // Compressed ranges, now that every chunk is known to be inside the tar.
        var all: [EStargzChunk] = []
        var located: [String: [EStargzChunk]] = [:]
        for (name, list) in chunks {
            var placed: [EStargzChunk] = []
            for var chunk in list {
                let start = chunk.innerOffset  // the absolute uncompressed offset until here
                let first = Self.lastIndex(in: index.checkpoints, withOutAtMost: start)
                let last = Self.lastIndex(in: index.checkpoints, withOutAtMost: start + chunk.chunkSize - 1)
                chunk.offset = spanStarts[first]
                chunk.nextOffset = spanEnds[last]
                chunk.innerOffset = start - index.checkpoints[first].out
                placed.append(chunk)
            }
            located[name] = placed
            all += placed
        }
        chunksByName = located
        allChunks = all.sorted { $0.offset < $1.offset || ($0.offset == $1.offset && $0.innerOffset < $1.innerOffset) }
    }

    /// The compressed end of the layer's spans (the blob's size).
    public var payloadEnd: Int64 { layer.size }

    /// Where `name`'s bytes at `offset` are (following hard links), or nil past its end or for an unknown file.
    public func chunk(for name: String, at offset: Int64) -> EStargzChunk? {
        EStargzChunk.find(name, at: offset, in: chunksByName, hardLinks: hardLinks)
    }

    /// The bytes of each of `chunks` out of `compressed`, the layer's bytes from `start`: a run of whole spans that
    /// covers them all. Each span is checked against its digest first; then the run is inflated once, from the
    /// checkpoint at `start`.
    public func decode(_ chunks: [EStargzChunk], compressed: [UInt8], from start: Int64) throws -> [[UInt8]] {
        guard let first = binarySearch(spanStarts, start) else {
            throw GzipIndexError.invalidIndex("no span starts at compressed offset \(start)")
        }
        let end = start + Int64(compressed.count)
        var last = first
        while last + 1 < spanEnds.count, spanEnds[last] < end { last += 1 }
        guard spanEnds[last] == end else { throw GzipIndexError.invalidIndex("bytes \(start)..<\(end) are not a run of whole spans") }
        for span in first...last {
            let bytes = compressed[Int(spanStarts[span] - start)..<Int(spanEnds[span] - start)]
            let actual = Digest.sha256(of: bytes).description
            guard actual == checkpoints[span].spanDigest else {
                throw GzipIndexError.layerMismatch(
                    "span \(span) (bytes \(spanStarts[span])..<\(spanEnds[span]) of \(layer.digest.short)) has digest \(actual), the index says \(checkpoints[span].spanDigest)")
            }
        }
        // Uncompressed extent of each wanted chunk, from the run's first output byte.
        let origin = checkpoints[first].out
        var wanted: [(index: Int, from: Int64, to: Int64)] = []
        for (position, chunk) in chunks.enumerated() {
            guard let at = binarySearch(spanStarts, chunk.offset), at >= first, chunk.nextOffset <= end else {
                throw GzipIndexError.invalidIndex("chunk of \(chunk.name) at \(chunk.offset) is not inside bytes \(start)..<\(end)")
            }
            let from = checkpoints[at].out + chunk.innerOffset - origin
            wanted.append((position, from, from + chunk.chunkSize))
        }
        let inflater = try SpanInflater(checkpoint: checkpoints[first], compressed: compressed)
        return try inflater.extract(wanted, layer: layer.digest.short, count: chunks.count)
    }

    /// The position of `value` in `sorted`, if it is there.
    func binarySearch(_ sorted: [Int64], _ value: Int64) -> Int? {
        let low = partitionPoint(sorted) { $0 < value }
        return low < sorted.count && sorted[low] == value ? low : nil
    }

    // MARK: Checking an index

    private static func checkSpans(
        _ checkpoints: [GzipCheckpoint], blobSize: Int64, uncompressedSize: Int64
    ) throws -> ([Int64], [Int64]) {
        func invalid(_ why: String) -> GzipIndexError { .invalidIndex(why) }
        guard let first = checkpoints.first else {
            if uncompressedSize == 0 { return ([], []) }
            throw invalid("no checkpoints for \(uncompressedSize) uncompressed bytes")
        }
        guard first.out == 0 else { throw invalid("the first checkpoint is at uncompressed offset \(first.out), not 0") }
        var starts: [Int64] = []
        var ends: [Int64] = []
        for (k, point) in checkpoints.enumerated() {
            guard (0...7).contains(point.bits), point.in >= 1, point.spanStart < blobSize else {
                throw invalid("checkpoint \(k) (in \(point.in), bits \(point.bits)) points past the \(blobSize)-byte blob")
            }
            guard point.window.count == Int(min(point.out, Int64(GzipIndex.windowSize))) else {
                throw invalid("checkpoint \(k) has a \(point.window.count)-byte window; at offset \(point.out) it must be \(min(point.out, Int64(GzipIndex.windowSize)))")
            }
            guard (try? Digest(point.spanDigest)) != nil else { throw invalid("checkpoint \(k) has no valid span digest") }
            let isLast = k + 1 == checkpoints.count
            let nextIn = isLast ? blobSize : checkpoints[k + 1].in
            let nextOut = isLast ? uncompressedSize : checkpoints[k + 1].out
            if let previous = starts.last, point.spanStart <= previous {
                throw invalid("checkpoint \(k) overlaps the one before it (its span starts at \(point.spanStart), the previous one's at \(previous))")
            }
            guard nextIn > point.in, isLast ? nextOut >= point.out : nextOut > point.out else {
                throw invalid("checkpoints \(k) and \(k + 1) overlap or are out of order (in \(point.in) then \(nextIn), out \(point.out) then \(nextOut))")
            }
            guard nextOut - point.out <= GzipIndex.maxSpanUncompressed, nextIn - point.spanStart <= GzipIndex.maxSpanUncompressed + (1 << 20) else {
                throw invalid("span \(k) is \(nextIn - point.spanStart) compressed and \(nextOut - point.out) uncompressed bytes, above the \(GzipIndex.maxSpanUncompressed)-byte limit")
            }
            starts.append(point.spanStart)
            ends.append(nextIn)
        }
        return (starts, ends)
    }

    /// Checks a file chunk (a `reg` entry's first, or a `chunk` entry) and records it with its absolute
    /// uncompressed offset in `innerOffset` (the compressed range is placed later).
    private static func appendChunk(
        _ entry: TOCEntry, file files: inout [String: (start: Int64, size: Int64, covered: Int64)], to chunks: inout [String: [EStargzChunk]],
        index: GzipIndex
    ) throws {
        func invalid(_ why: String) -> GzipIndexError { .invalidIndex(why) }
        guard let file = files[entry.name] else { throw invalid("chunk of \"\(entry.name)\", which has no earlier reg entry") }
        guard entry.chunkOffset == file.covered, entry.chunkSize >= 0 else {
            throw invalid("\"\(entry.name)\": chunk at \(entry.chunkOffset) does not continue its chunks, which end at \(file.covered)")
        }
        let size = entry.chunkSize == 0 ? file.size - entry.chunkOffset : entry.chunkSize
        guard size > 0, size <= GzipIndex.maxChunkSize, size <= file.size - entry.chunkOffset else {
            throw invalid("\"\(entry.name)\": a chunk of \(size) bytes at \(entry.chunkOffset) in a file of \(file.size) (at most \(GzipIndex.maxChunkSize) a chunk)")
        }
        guard entry.type == "reg" || entry.offset == file.start + entry.chunkOffset else {
            throw invalid("\"\(entry.name)\": chunk at \(entry.chunkOffset) says offset \(entry.offset), its file's data says \(file.start + entry.chunkOffset)")
        }
        guard (try? Digest(entry.chunkDigest)) != nil else { throw invalid("\"\(entry.name)\": chunk at \(entry.chunkOffset) has no valid chunkDigest") }
        files[entry.name]?.covered = entry.chunkOffset + size
        chunks[entry.name, default: []].append(
            EStargzChunk(
                name: entry.name, chunkOffset: entry.chunkOffset, chunkSize: size, offset: 0, nextOffset: 0,
                innerOffset: file.start + entry.chunkOffset, chunkDigest: entry.chunkDigest))
    }

    /// The last checkpoint whose output starts at or before `offset` (checkpoint 0 starts at 0).
    private static func lastIndex(in checkpoints: [GzipCheckpoint], withOutAtMost offset: Int64) -> Int {
        max(0, partitionPoint(checkpoints) { $0.out <= offset } - 1)
    }
}

/// The index of the first element of `elements` for which `isBefore` is false; `elements` are ordered so that
/// `isBefore` holds for a prefix of them.
private func partitionPoint<Element>(_ elements: [Element], _ isBefore: (Element) -> Bool) -> Int {
    var low = 0, high = elements.count
    while low < high {
        let middle = (low + high) / 2
        if isBefore(elements[middle]) { low = middle + 1 } else { high = middle }
    }
    return low
}

/// Raw inflate of a run of spans from its first checkpoint, copying out the uncompressed ranges asked for.
private final class SpanInflater {
    private var stream = z_stream()
    private let compressed: [UInt8]
    private let checkpoint: GzipCheckpoint

    init(checkpoint: GzipCheckpoint, compressed: [UInt8]) throws {
        self.checkpoint = checkpoint
        self.compressed = compressed
        guard slipway_inflate_init2(&stream, -15) == Z_OK else { throw GzipIndexError.layerMismatch("zlib would not start") }
    }

    deinit { inflateEnd(&stream) }

    /// Inflates until every range in `wanted` (offsets from the checkpoint's output) is filled.
    func extract(_ wanted: [(index: Int, from: Int64, to: Int64)], layer: String, count: Int) throws -> [[UInt8]] {
        var results = [[UInt8]](repeating: [], count: count)
        for item in wanted { results[item.index].reserveCapacity(Int(item.to - item.from)) }
        let goal = wanted.map(\.to).max() ?? 0
        let scratchSize = 256 << 10
        let scratch = UnsafeMutablePointer<UInt8>.allocate(capacity: scratchSize)
        defer { scratch.deallocate() }
        var position: Int64 = 0
        // From a checkpoint the stream is raw deflate; later members are read with their gzip wrapper.
        var raw = true
        try compressed.withUnsafeBufferPointer { input in
            let base = UnsafeMutablePointer(mutating: input.baseAddress!)
            var at = checkpoint.bits > 0 ? 1 : 0
            if checkpoint.bits > 0 {
                inflatePrime(&stream, Int32(checkpoint.bits), Int32(input[0] >> (8 - checkpoint.bits)))
            }
            if !checkpoint.window.isEmpty {
                let rc = checkpoint.window.withUnsafeBytes {
                    inflateSetDictionary(&stream, $0.bindMemory(to: UInt8.self).baseAddress, UInt32($0.count))
                }
                guard rc == Z_OK else { throw GzipIndexError.layerMismatch("zlib refused the checkpoint's window") }
            }
            while position < goal {
                stream.next_in = base + at
                stream.avail_in = UInt32(input.count - at)
                stream.next_out = scratch
                stream.avail_out = UInt32(scratchSize)
                let rc = inflate(&stream, Z_NO_FLUSH)
                at = input.count - Int(stream.avail_in)
                let produced = scratchSize - Int(stream.avail_out)
                let segment = position..<(position + Int64(produced))
                for item in wanted where item.from < segment.upperBound && item.to > segment.lowerBound {
                    let from = Int(max(item.from, segment.lowerBound) - position)
                    let to = Int(min(item.to, segment.upperBound) - position)
                    results[item.index].append(contentsOf: UnsafeBufferPointer(start: scratch + from, count: to - from))
                }
                position = segment.upperBound
                switch rc {
                case Z_OK:
                    continue
                case Z_STREAM_END:
                    // Raw inflate leaves the member's 8-byte trailer; zlib reads the next member's header itself.
                    if raw { at += 8 }
                    guard input.count - at >= 2, input[at] == 0x1f, input[at + 1] == 0x8b, position < goal else {
                        if position < goal { throw short(position, goal, layer) }
                        return
                    }
                    inflateReset2(&stream, 31)
                    raw = false
                case Z_BUF_ERROR:
                    throw short(position, goal, layer)
                default:
                    let message = stream.msg.map { String(cString: $0) } ?? "error \(rc)"
                    throw GzipIndexError.layerMismatch("inflating layer \(layer) from compressed offset \(checkpoint.in): \(message)")
                }
            }
        }
        return results
    }

    private func short(_ position: Int64, _ goal: Int64, _ layer: String) -> GzipIndexError {
        .layerMismatch("layer \(layer): the spans from compressed offset \(checkpoint.in) inflate to \(position) bytes, the index needs \(goal)")
    }
}

extension IndexedLayer {
    /// Reads the whole layer front to back from `next` (its bytes in order), hands every chunk's verified bytes to
    /// `store` as they pass (one inflate of the stream, with ISA-L: no checkpoint is needed), and at the end checks
    /// the layer's digest, size and diffID against the descriptor and the index: the check that turns an index's
    /// claims into verified facts. Throws `layerMismatch` when they disagree.
    public func readWhole(next: @escaping () throws -> [UInt8]?, store: (EStargzChunk, [UInt8]) throws -> Void) throws {
        let compressed = CompressedFeed(next)
        let stream = GzipStream(compressedSize: layer.size, layer: layer.digest.description) { try compressed.next() }
        var diffHasher = DigestHasher()
        let ordered = allChunks.map { (start: absoluteStart(of: $0), chunk: $0) }.sorted { $0.start < $1.start }
        var position: Int64 = 0
        var current = 0
        var chunk: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count: Int
            do {
                count = try buffer.withUnsafeMutableBytes { try stream.read(into: $0) }
            } catch {
                throw GzipIndexError.layerMismatch("the layer does not inflate: \(error)")
            }
            if count == 0 { break }
            try buffer.withUnsafeBytes { raw in
                var rest = UnsafeRawBufferPointer(rebasing: raw[..<count])
                diffHasher.update(rest)
                while !rest.isEmpty, current < ordered.count {
                    let (start, wanted) = ordered[current]
                    let end = start + wanted.chunkSize
                    if position + Int64(rest.count) <= start { break }
                    if position < start {
                        rest = UnsafeRawBufferPointer(rebasing: rest[Int(start - position)...])
                        position = start
                    }
                    let take = Int(min(Int64(rest.count), end - position))
                    chunk.append(contentsOf: rest[..<take])
                    rest = UnsafeRawBufferPointer(rebasing: rest[take...])
                    position += Int64(take)
                    if position == end {
                        let actual = Digest.sha256(of: chunk).description
                        guard actual == wanted.chunkDigest else {
                            throw GzipIndexError.layerMismatch(
                                "\(wanted.name) at \(wanted.chunkOffset): digest \(actual), the index says \(wanted.chunkDigest)")
                        }
                        try store(wanted, chunk)
                        chunk.removeAll(keepingCapacity: true)
                        current += 1
                    }
                }
                position += Int64(rest.count)
            }
        }
        try compressed.drain()
        guard compressed.consumed == layer.size, compressed.digest == layer.digest else {
            throw GzipIndexError.layerMismatch(
                "\(compressed.consumed) bytes with digest \(compressed.digest), the manifest says \(layer.size) bytes with \(layer.digest)")
        }
        guard diffHasher.finalize() == diffID else {
            throw GzipIndexError.layerMismatch("uncompressed digest \(diffHasher.finalize()), the index says \(diffID)")
        }
        guard current == ordered.count else {
            throw GzipIndexError.layerMismatch("the layer ended before \(ordered[current].chunk.name), which the index places at \(ordered[current].start)")
        }
    }

    /// Where the chunk starts in the uncompressed stream.
    func absoluteStart(of chunk: EStargzChunk) -> Int64 {
        guard let span = binarySearch(spanStarts, chunk.offset) else { return -1 }
        return checkpoints[span].out + chunk.innerOffset
    }
}

/// The compressed bytes of a whole read, hashed and counted as the decoder pulls them. Used by one thread.
private final class CompressedFeed: @unchecked Sendable {
    private let source: () throws -> [UInt8]?
    private var hasher = DigestHasher()
    private(set) var consumed: Int64 = 0

    init(_ source: @escaping () throws -> [UInt8]?) { self.source = source }

    func next() throws -> [UInt8]? {
        guard let bytes = try source() else { return nil }
        hasher.update(bytes)
        consumed += Int64(bytes.count)
        return bytes
    }

    /// Whatever the decoder did not need (bytes after the last member) still counts for the digest.
    func drain() throws { while try next() != nil {} }

    var digest: Digest { hasher.finalize() }
}
