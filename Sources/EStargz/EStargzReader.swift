import Archive
import Crypto
import Foundation
import OCI

/// A payload chunk of a regular file, with the compressed byte range to fetch for it.
public struct EStargzChunk: Sendable, Equatable {
    /// Normalised file name.
    public var name: String
    /// Offset of this chunk inside the uncompressed file.
    public var chunkOffset: Int64
    /// Uncompressed size of this chunk (filled in for the last chunk).
    public var chunkSize: Int64
    /// Compressed offset of the gzip member holding the chunk.
    public var offset: Int64
    /// End of the compressed range: the next payload member's offset, or the TOC offset for the last one.
    public var nextOffset: Int64
    /// Uncompressed offset of the chunk inside the member at `offset`.
    public var innerOffset: Int64
    public var chunkDigest: String

    public var compressedRange: Range<Int64> { offset..<nextOffset }

    /// The chunk of file `name` holding its byte `offset`, following hard links (at most 32 hops), from a
    /// reader's tables; nil past the file's end or for an unknown file.
    package static func find(
        _ name: String, at offset: Int64, in chunksByName: [String: [EStargzChunk]], hardLinks: [String: String]
    ) -> EStargzChunk? {
        var clean = EStargzReader.lookupName(name)
        var hops = 0
        while chunksByName[clean] == nil, let target = hardLinks[clean], hops < 32 {
            clean = target
            hops += 1
        }
        return chunksByName[clean]?.first { offset >= $0.chunkOffset && offset - $0.chunkOffset < $0.chunkSize }
    }

    public init(
        name: String, chunkOffset: Int64, chunkSize: Int64, offset: Int64, nextOffset: Int64, innerOffset: Int64, chunkDigest: String
    ) {
        self.name = name
        self.chunkOffset = chunkOffset
        self.chunkSize = chunkSize
        self.offset = offset
        self.nextOffset = nextOffset
        self.innerOffset = innerOffset
        self.chunkDigest = chunkDigest
    }
}

/// Which footer a blob ends with.
public enum EStargzFooterKind: String, Sendable, Equatable {
    /// 51 bytes: the gzip Extra field holds an RFC 1952 subfield `SG` whose data is `%016x` TOC offset + `STARGZ`.
    case estargz
    /// 47 bytes, legacy stargz (google/crfs): the Extra field holds `%016x` + `STARGZ` directly, without a subfield
    /// header. TOC, entries and gzip member positions are the same as eStargz.
    case legacy

    /// Footer size in bytes.
    public var size: Int { self == .estargz ? estargzFooterSize : legacyStargzFooterSize }
}

/// Reads an eStargz (or legacy stargz) blob through random access (a tail fetch plus ranges): footer, TOC, chunks.
///
/// The blob is untrusted until its TOC digest is checked with `verifyTOC` and each chunk against its digest (done
/// by `readChunk`), so opening validates everything a hostile blob could use to make the reader allocate without
/// bound, trap, or make a lazily mounted filesystem serve a path outside its root:
/// - footer: eStargz (51 bytes) tried first, then legacy stargz (47 bytes), as the reference does; the TOC offset
///   must be 16 hex digits and lie before the footer;
/// - TOC size: bounded by `maxCompressedTOCSize` compressed (before the read, `locateTOC`) and `maxTOCSize` while
///   inflating;
/// - names: a TOC entry name or hard link target with a `..` component or a NUL byte is refused
///   (`EStargzError.unsafeEntryName`). The reference normalises names with `path.Clean("/" + name)`, which maps
///   `a/../../etc/passwd` to `etc/passwd`; no real layer builder writes such names, and a blob that does is
///   either broken or trying to confuse whatever lists or extracts it, so the whole layer is refused instead of
///   guessing which file was meant. `.`, empty components and a leading `/` are normalised away as the reference
///   does. Symlink targets are not checked: they are data (`../lib/x` is ordinary) and the filesystem serving them
///   never follows them itself;
/// - payload entries: `offset` inside the payload area `[1, tocOffset)` and unique among gzip member starts;
///   `innerOffset >= 0` and only inside the member the previous entry started; `chunkOffset`, `chunkSize`, `size`
///   non-negative, their sums free of overflow and the chunk inside its file; a file's chunks tile it from 0 to its
///   size (so sizes are bounded by the chunks that hold them); entries in blob order (each member ends after it
///   starts, `nextOffset > offset`); each chunk within `maxChunkSize` uncompressed and `maxChunkCompressedSpan`
///   compressed, the bounds every fetch checks again (`checkCompressedRange`, `checkedInflatedSize`);
/// - reads: the `readAt` closure must return exactly the bytes asked for, otherwise `EStargzError.truncated`.
///
/// Every `EStargzError` thrown (by `init`, `verifyTOC`, `readChunk`) is wrapped in `.layer(layer, error)` when a
/// layer name was given. Errors thrown by the `readAt` closure that are not `EStargzError` (I/O, network,
/// cancellation) pass through unchanged so callers can still tell them apart.
public final class EStargzReader {
    /// Default bound of the uncompressed TOC (the tar holding `stargz.index.json`).
    ///
    /// Why 256 MiB: the whole TOC is held in memory several times over while opening (the compressed bytes, the
    /// inflated tar, the JSON, the decoded entries, then the chunk map), so it must be bounded before inflating, or a
    /// few hundred KiB of gzip bomb is enough to exhaust memory; 1 GiB would already mean several GiB of RSS. A TOC
    /// entry is about 200-400 bytes of JSON, so 256 MiB is 700 000+ files and chunks, well above the largest real
    /// layers (a few hundred thousand files); containers/storage caps the equivalent zstd:chunked manifest at
    /// 150 MiB. A caller that must open such a layer can pass a larger `maxTOCSize`.
    public static let defaultMaxTOCSize = 256 << 20
    /// Bound of the compressed TOC member, checked against the footer before anything is read or allocated. TOC
    /// JSON compresses about tenfold, so a `defaultMaxTOCSize` TOC is far below this; only a hostile footer (a TOC
    /// offset near the start of a large blob) reaches it.
    public static let maxCompressedTOCSize: Int64 = 64 << 20
    /// Bound of one chunk, uncompressed (`innerOffset + chunkSize`, so a chunk sharing a gzip member with the
    /// chunks before it counts them too). Every path that fetches or inflates a chunk holds it in memory whole
    /// (reads, prefetch, background fetch, verification), several FUSE reads at once, so a hostile TOC must not
    /// make one chunk the size of the blob. Writers chunk at 4 MiB by default (stargz-snapshotter and Slipway);
    /// 64 MiB leaves room for a larger `--chunk-size` while keeping a mount's memory in the hundreds of MiB.
    public static let maxChunkSize: Int64 = 64 << 20
    /// Bound of one chunk's compressed range (`offset..<nextOffset`), derived from `maxChunkSize`: deflate adds at
    /// most 5 bytes per 64 KiB stored block to incompressible data, and the range also holds the tar headers of
    /// the non-payload entries up to the next payload member (directories, links: 512 bytes each before deflate).
    public static let maxChunkCompressedSpan: Int64 = maxChunkSize + maxChunkSize / 64 + (1 << 20)

    public let blobSize: Int64
    /// Name used in errors (usually the blob digest); nil when the caller gave none.
    public let layer: String?
    /// Which footer the blob ends with.
    public let footerKind: EStargzFooterKind
    public let tocOffset: Int64
    public let toc: TOC
    /// sha256 of the TOC JSON bytes as stored.
    public let tocDigest: OCI.Digest
    /// The TOC JSON bytes as stored.
    public let tocJSON: [UInt8]
    /// Chunks of each normalised file name, in file order.
    public let chunksByName: [String: [EStargzChunk]]
    /// Hard link name → normalised target name.
    public let hardLinks: [String: String]
    private let readAt: (Int64, Int) throws -> [UInt8]

    /// Whether the blob ends with a legacy stargz footer.
    public var isLegacy: Bool { footerKind == .legacy }

    /// - Parameters:
    ///   - blobSize: size of the blob (from its descriptor).
    ///   - layer: name put into every error (e.g. the blob digest); nil for none.
    ///   - maxTOCSize: bound of the uncompressed TOC tar (see `defaultMaxTOCSize`).
    ///   - readAt: returns exactly `count` bytes at `offset` of the blob (fewer is reported as `truncated`).
    public init(
        blobSize: Int64, layer: String? = nil, maxTOCSize: Int = EStargzReader.defaultMaxTOCSize,
        readAt: @escaping (_ offset: Int64, _ count: Int) throws -> [UInt8]
    ) throws {
        let opened: Opened
        do {
            opened = try Opened(blobSize: blobSize, maxTOCSize: maxTOCSize) { try Self.readExactly(readAt, $0, $1) }
        } catch let e as EStargzError {
            throw e.inLayer(layer)
        }
        self.blobSize = blobSize
        self.layer = layer
        self.readAt = readAt
        footerKind = opened.footerKind
        tocOffset = opened.tocOffset
        toc = opened.toc
        tocJSON = opened.tocJSON
        tocDigest = opened.tocDigest
        chunksByName = opened.chunksByName
        hardLinks = opened.hardLinks
    }

    /// Where the TOC member is, from the footer at the end of `footerTail` (the blob's last 51 bytes, or the whole
    /// blob if shorter). Throws unless the member lies between the payload and the footer and its compressed size
    /// is within `maxCompressedTOCSize` (and what a `maxTOCSize` TOC could compress to): callers read the member
    /// into memory, so this is checked before they read or allocate anything.
    public static func locateTOC(blobSize: Int64, footerTail: [UInt8], maxTOCSize: Int = defaultMaxTOCSize) throws
        -> (footerKind: EStargzFooterKind, tocOffset: Int64, compressedSize: Int64)
    {
        let maxTOCSize = Int64(min(max(maxTOCSize, 0), 1 << 46))  // so that the bounds below cannot overflow
        let (kind, tocOffset) = try parseStargzFooter(footerTail)
        let footerStart = blobSize - Int64(kind.size)
        guard tocOffset < footerStart else {
            throw EStargzError.invalidFooter(
                "TOC offset \(tocOffset) is past the end of the payload (the \(kind.size)-byte footer starts at \(footerStart) of \(blobSize) bytes)")
        }
        // Deflate adds at most a few bytes per 64 KiB to what it cannot compress.
        let compressedSize = footerStart - tocOffset
        let maxCompressed = min(maxTOCSize + maxTOCSize / 64 + (64 << 10), maxCompressedTOCSize)
        guard compressedSize <= maxCompressed else {
            throw EStargzError.tocTooLarge(
                limit: Int(maxTOCSize),
                detail: "the TOC member at offset \(tocOffset) is \(compressedSize) bytes compressed, above the \(maxCompressed)-byte limit")
        }
        return (kind, tocOffset, compressedSize)
    }

    /// Convenience: a reader over an in-memory blob.
    public convenience init(blob: [UInt8], layer: String? = nil, maxTOCSize: Int = EStargzReader.defaultMaxTOCSize)
        throws
    {
        try self.init(blobSize: Int64(blob.count), layer: layer, maxTOCSize: maxTOCSize) { offset, count in
            // Whatever part of the range exists; the reader reports a short answer as `truncated`.
            let lo = min(Int(clamping: max(0, offset)), blob.count)
            let hi = lo + min(max(0, count), blob.count - lo)
            return Array(blob[lo..<hi])
        }
    }

    /// Throws unless the TOC JSON digest equals `expected` (the `toc.digest` annotation).
    public func verifyTOC(_ expected: OCI.Digest) throws {
        guard tocDigest == expected else {
            throw EStargzError.tocDigestMismatch(expected: expected.description, actual: tocDigest.description)
                .inLayer(layer)
        }
    }

    /// The chunk of `name` containing uncompressed file offset `offset`.
    public func chunk(for name: String, at offset: Int64) -> EStargzChunk? {
        EStargzChunk.find(name, at: offset, in: chunksByName, hardLinks: hardLinks)
    }

    /// All payload chunks, in blob order.
    public var allChunks: [EStargzChunk] {
        chunksByName.values.flatMap { $0 }.sorted { $0.offset < $1.offset || ($0.offset == $1.offset && $0.innerOffset < $1.innerOffset) }
    }

    /// Fetches, decompresses and verifies one chunk.
    public func readChunk(_ chunk: EStargzChunk) throws -> [UInt8] {
        do {
            try Self.checkCompressedRange(of: chunk, payloadEnd: tocOffset)
            let compressed = try Self.readExactly(readAt, chunk.offset, Int(chunk.nextOffset - chunk.offset))
            let out = try EStargzReader.decompressChunk(chunk, compressed: compressed)
            try EStargzReader.verify(chunk, bytes: out)
            return out
        } catch let e as EStargzError {
            throw e.inLayer(layer)
        }
    }

    /// Throws unless the chunk's compressed range is inside the payload area `1..<payloadEnd` (the TOC offset),
    /// non-empty and at most `maxChunkCompressedSpan` bytes: the check every path makes before it fetches a chunk.
    public static func checkCompressedRange(of chunk: EStargzChunk, payloadEnd: Int64) throws {
        guard chunk.offset > 0, chunk.offset < chunk.nextOffset, chunk.nextOffset <= payloadEnd else {
            throw EStargzError.invalidTOC(
                "chunk of \(chunk.name): compressed range \(chunk.offset)..<\(chunk.nextOffset) is not inside the payload area 1..<\(payloadEnd)")
        }
        guard chunk.nextOffset - chunk.offset <= maxChunkCompressedSpan else {
            throw EStargzError.invalidTOC(
                "chunk of \(chunk.name) at offset \(chunk.offset): \(chunk.nextOffset - chunk.offset) compressed bytes, above the \(maxChunkCompressedSpan)-byte limit of one chunk's compressed range")
        }
    }

    /// The uncompressed bytes to inflate for the chunk (`innerOffset + chunkSize`), or `invalidTOC` unless that is
    /// within 1...`maxChunkSize` and the chunk is not empty.
    public static func checkedInflatedSize(of chunk: EStargzChunk) throws -> Int64 {
        let (end, overflow) = chunk.innerOffset.addingReportingOverflow(chunk.chunkSize)
        guard chunk.innerOffset >= 0, chunk.chunkSize > 0, !overflow, end <= maxChunkSize else {
            throw EStargzError.invalidTOC(
                "chunk of \(chunk.name) at offset \(chunk.offset): innerOffset \(chunk.innerOffset) + chunkSize \(chunk.chunkSize) is not within 1...\(maxChunkSize) bytes")
        }
        return end
    }

    /// Decompresses the chunk's bytes out of its compressed range.
    public static func decompressChunk(_ chunk: EStargzChunk, compressed: [UInt8]) throws -> [UInt8] {
        let need = Int(try checkedInflatedSize(of: chunk))
        let data: [UInt8]
        do {
            data = try gunzip(compressed, limit: need)
        } catch {
            throw EStargzError.corruptGzip("chunk of \(chunk.name) at offset \(chunk.offset): \(error)")
        }
        guard data.count >= need else {
            throw EStargzError.corruptGzip("chunk of \(chunk.name) at offset \(chunk.offset): \(data.count) of \(need) bytes")
        }
        return Array(data[Int(chunk.innerOffset)..<need])
    }

    /// Throws unless `bytes` match the chunk's `chunkDigest`.
    public static func verify(_ chunk: EStargzChunk, bytes: [UInt8]) throws {
        let actual = OCI.Digest.sha256(of: bytes).description
        guard !chunk.chunkDigest.isEmpty, actual == chunk.chunkDigest else {
            throw EStargzError.chunkDigestMismatch(
                name: chunk.name, offset: chunk.offset, expected: chunk.chunkDigest, actual: actual)
        }
    }

    private static func readExactly(_ readAt: (Int64, Int) throws -> [UInt8], _ offset: Int64, _ count: Int) throws
        -> [UInt8]
    {
        let bytes = try readAt(offset, count)
        guard bytes.count == count else { throw EStargzError.truncated(offset: offset, expected: count, got: bytes.count) }
        return bytes
    }

    /// A caller's name as the reference normalises it: `path.Clean("/" + name)` without the leading `/`.
    package static func lookupName(_ name: String) -> String {
        var parts: [Substring] = []
        for part in name.split(separator: "/", omittingEmptySubsequences: true) where part != "." {
            if part == ".." {
                if !parts.isEmpty { parts.removeLast() }
            } else {
                parts.append(part)
            }
        }
        return parts.joined(separator: "/")
    }

    /// A TOC name normalised (empty and `.` components dropped), or `unsafeEntryName` when it has a `..`
    /// component or a NUL byte.
    package static func safeTOCName(_ path: String, entry: String) throws -> String {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        guard !parts.contains("..") && !path.utf8.contains(0) else {
            throw EStargzError.unsafeEntryName(entry: entry, path: path)
        }
        return parts.filter { $0 != "." }.joined(separator: "/")
    }
}

/// Everything `EStargzReader.init` derives from the footer and TOC.
private struct Opened {
    var footerKind: EStargzFooterKind
    var tocOffset: Int64
    var toc: TOC
    var tocJSON: [UInt8]
    var tocDigest: OCI.Digest
    var chunksByName: [String: [EStargzChunk]]
    var hardLinks: [String: String]

    init(blobSize: Int64, maxTOCSize: Int, read: (Int64, Int) throws -> [UInt8]) throws {
        let maxTOCSize = min(max(maxTOCSize, 0), 1 << 46)  // so that the bounds below cannot overflow
        // Footer: the last 51 bytes in one read; eStargz first, then legacy stargz on the last 47.
        guard blobSize >= Int64(legacyStargzFooterSize) else {
            throw EStargzError.invalidFooter(
                "the blob is \(blobSize) bytes, smaller than any footer (\(estargzFooterSize) bytes eStargz, \(legacyStargzFooterSize) legacy stargz)")
        }
        let tailSize = Int(min(blobSize, Int64(estargzFooterSize)))
        let tail = try read(blobSize - Int64(tailSize), tailSize)
        let member = try EStargzReader.locateTOC(blobSize: blobSize, footerTail: tail, maxTOCSize: maxTOCSize)
        footerKind = member.footerKind
        tocOffset = member.tocOffset
        let compressedSize = member.compressedSize
        let compressed = try read(tocOffset, Int(compressedSize))
        let tar: [UInt8]
        do {
            tar = try gunzip(compressed, limit: maxTOCSize + 1)
        } catch {
            throw EStargzError.corruptGzip("TOC member at offset \(tocOffset) (\(compressedSize) bytes): \(error)")
        }
        guard tar.count <= maxTOCSize else {
            throw EStargzError.tocTooLarge(
                limit: maxTOCSize, detail: "the TOC member at offset \(tocOffset) inflates to more than \(maxTOCSize) bytes")
        }
        let json: [UInt8]
        do {
            let tarReader = TarReader(bytes: tar)
            guard let h = try tarReader.next() else { throw EStargzError.invalidTOC("the TOC member holds an empty tar") }
            guard EStargzReader.lookupName(h.name) == estargzTOCName else {
                throw EStargzError.invalidTOC("the TOC member's first tar entry is \"\(h.name)\", not \(estargzTOCName)")
            }
            json = try tarReader.readContents()
        } catch let e as EStargzError {
            throw e
        } catch {
            throw EStargzError.invalidTOC("tar of the TOC member at offset \(tocOffset): \(error)")
        }
        tocDigest = OCI.Digest.sha256(of: json)
        tocJSON = json
        do {
            toc = try TOCParser.parse(json)
        } catch let e as EStargzError {
            throw e
        } catch {
            throw EStargzError.invalidTOC("\(estargzTOCName) is not valid TOC JSON: \(error)")
        }
        guard toc.version == 1 else { throw EStargzError.invalidTOC("unsupported version \(toc.version), want 1") }

        // Entries, in TOC (= blob) order.
        var fileSize: [String: Int64] = [:]
        var links: [String: String] = [:]
        var memberStarter: [Int64: String] = [:]
        var currentMember: Int64?
        var payload: [EStargzChunk] = []
        // Bytes of each file its chunks cover so far: chunks must tile the file from 0 to its size, so a file's size
        // is bounded by what its chunks hold (and a TOC cannot announce an exabyte file behind one small chunk).
        var covered: [String: Int64] = [:]
        for e in toc.entries {
            let name = try EStargzReader.safeTOCName(e.name, entry: e.name)
            if e.type == "hardlink" { links[name] = try EStargzReader.safeTOCName(e.linkName, entry: e.name) }
            guard e.size >= 0 else { throw EStargzError.invalidTOC("\"\(e.name)\": negative size \(e.size)") }
            if e.type == "reg" {
                fileSize[name] = e.size
                covered[name] = 0
            }
            guard (e.type == "reg" && e.size > 0) || e.type == "chunk" else {
                // Entries without payload (directories, links, landmarks) may carry an offset too; the prefetch
                // landmark's bounds the prioritized region.
                guard e.offset >= 0, e.offset <= tocOffset else {
                    throw EStargzError.invalidTOC("\"\(e.name)\": offset \(e.offset) is outside the blob 0...\(tocOffset)")
                }
                continue
            }
            guard let size = fileSize[name] else {
                throw EStargzError.invalidTOC("chunk of \"\(e.name)\", which has no earlier reg entry")
            }
            guard e.offset > 0, e.offset < tocOffset else {
                throw EStargzError.invalidTOC(
                    "\"\(e.name)\": offset \(e.offset) is outside the payload area 1..<\(tocOffset)")
            }
            guard e.innerOffset >= 0 else {
                throw EStargzError.invalidTOC("\"\(e.name)\": negative innerOffset \(e.innerOffset)")
            }
            if e.innerOffset == 0 {
                if let other = memberStarter.updateValue(e.name, forKey: e.offset) {
                    throw EStargzError.invalidTOC("offset \(e.offset) found twice (\"\(other)\" and \"\(e.name)\")")
                }
                currentMember = e.offset
            } else if e.offset != currentMember {
                throw EStargzError.invalidTOC(
                    "\"\(e.name)\": innerOffset \(e.innerOffset) in a gzip member at \(e.offset) that the entry before it does not start")
            }
            guard e.chunkOffset >= 0, e.chunkOffset < size, e.chunkSize >= 0 else {
                throw EStargzError.invalidTOC(
                    "\"\(e.name)\": chunkOffset \(e.chunkOffset), chunkSize \(e.chunkSize) outside a file of \(size) bytes")
            }
            let chunkSize = e.chunkSize != 0 ? e.chunkSize : size - e.chunkOffset
            let (end, overflow) = e.chunkOffset.addingReportingOverflow(chunkSize)
            let innerOverflow = e.innerOffset.addingReportingOverflow(chunkSize).overflow
            guard !overflow, !innerOverflow, end <= size else {
                throw EStargzError.invalidTOC(
                    "\"\(e.name)\": chunk \(e.chunkOffset)+\(chunkSize) (innerOffset \(e.innerOffset)) outside a file of \(size) bytes")
            }
            guard e.chunkOffset == covered[name] else {
                throw EStargzError.invalidTOC(
                    "\"\(e.name)\": chunk at \(e.chunkOffset) does not continue the file's chunks, which end at \(covered[name] ?? 0)")
            }
            covered[name] = end
            payload.append(
                EStargzChunk(
                    name: name, chunkOffset: e.chunkOffset, chunkSize: chunkSize, offset: e.offset, nextOffset: 0,
                    innerOffset: e.innerOffset, chunkDigest: e.chunkDigest))
        }
        // nextOffset: the start of the next gzip member, or the TOC for the last one.
        var next = tocOffset
        for i in payload.indices.reversed() {
            guard payload[i].offset < next else {
                throw EStargzError.invalidTOC(
                    "\"\(payload[i].name)\": gzip member at offset \(payload[i].offset) would end at \(next) (nextOffset <= offset); payload entries are not in blob order")
            }
            payload[i].nextOffset = next
            if payload[i].innerOffset == 0 { next = payload[i].offset }
        }
        for (name, size) in fileSize where covered[name] != size {
            throw EStargzError.invalidTOC(
                "\"\(name)\": its chunks cover \(covered[name] ?? 0) of its \(size) bytes")
        }
        // The bounds every fetch of a chunk checks again, checked here once so that a layer with a chunk no read
        // could serve is refused at mount time rather than failing reads later.
        for chunk in payload {
            try EStargzReader.checkCompressedRange(of: chunk, payloadEnd: tocOffset)
            _ = try EStargzReader.checkedInflatedSize(of: chunk)
        }
        var byName: [String: [EStargzChunk]] = [:]
        for c in payload { byName[c.name, default: []].append(c) }
        chunksByName = byName
        hardLinks = links
    }
}

/// Parses the footer at the end of `tail` (the last 51 bytes of the blob, or the whole blob if shorter): the
/// eStargz footer on all 51 bytes, else the legacy stargz footer on the last 47. Returns its kind and the TOC offset.
public func parseStargzFooter(_ tail: [UInt8]) throws -> (kind: EStargzFooterKind, tocOffset: Int64) {
    func detail(_ e: EStargzError) -> String {
        if case .invalidFooter(let d) = e { return d }
        return e.description
    }
    let eStargzProblem: String
    do {
        guard tail.count >= estargzFooterSize else {
            throw EStargzError.invalidFooter("\(tail.count) bytes, want \(estargzFooterSize)")
        }
        return (.estargz, try parseEStargzFooter(Array(tail.suffix(estargzFooterSize))))
    } catch let e as EStargzError {
        eStargzProblem = detail(e)
    }
    do {
        guard tail.count >= legacyStargzFooterSize else {
            throw EStargzError.invalidFooter("\(tail.count) bytes, want \(legacyStargzFooterSize)")
        }
        return (.legacy, try parseLegacyStargzFooter(Array(tail.suffix(legacyStargzFooterSize))))
    } catch let e as EStargzError {
        throw EStargzError.invalidFooter(
            "no eStargz footer in the last \(estargzFooterSize) bytes (\(eStargzProblem)) and no legacy stargz footer in the last \(legacyStargzFooterSize) (\(detail(e))); the blob is not (e)stargz, or it is truncated")
    }
}

/// Parses the 51-byte eStargz footer; returns the TOC offset.
public func parseEStargzFooter(_ b: [UInt8]) throws -> Int64 {
    guard b.count == estargzFooterSize else { throw EStargzError.invalidFooter("size \(b.count), want 51") }
    guard b[0] == 0x1f, b[1] == 0x8b, b[2] == 8, b[3] & 0xfe == 4 else {
        throw EStargzError.invalidFooter("not a gzip header with just an extra field")
    }
    guard b[10] == 26, b[11] == 0 else { throw EStargzError.invalidFooter("extra field length \(Int(b[10]) | Int(b[11]) << 8), want 26") }
    guard b[12] == UInt8(ascii: "S"), b[13] == UInt8(ascii: "G"), b[14] == 22, b[15] == 0 else {
        throw EStargzError.invalidFooter("missing SG subfield")
    }
    guard Array(b[32..<38]) == Array("STARGZ".utf8) else { throw EStargzError.invalidFooter("wrong magic, want STARGZ") }
    return try parseTOCOffsetField(b[16..<32])
}

/// Parses the 47-byte legacy stargz (google/crfs) footer; returns the TOC offset.
public func parseLegacyStargzFooter(_ b: [UInt8]) throws -> Int64 {
    guard b.count == legacyStargzFooterSize else { throw EStargzError.invalidFooter("size \(b.count), want 47") }
    guard b[0] == 0x1f, b[1] == 0x8b, b[2] == 8, b[3] & 0xfe == 4 else {
        throw EStargzError.invalidFooter("not a gzip header with just an extra field")
    }
    guard b[10] == 22, b[11] == 0 else { throw EStargzError.invalidFooter("extra field length \(Int(b[10]) | Int(b[11]) << 8), want 22") }
    guard Array(b[28..<34]) == Array("STARGZ".utf8) else { throw EStargzError.invalidFooter("wrong magic, want STARGZ") }
    return try parseTOCOffsetField(b[12..<28])
}

/// 16 hex digits (no sign, no prefix) holding a non-negative Int64.
private func parseTOCOffsetField(_ field: ArraySlice<UInt8>) throws -> Int64 {
    let text = String(decoding: field, as: UTF8.self)
    guard field.count == 16, field.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x66) }),
          let value = UInt64(text, radix: 16)
    else {
        throw EStargzError.invalidFooter("TOC offset field \(String(reflecting: text)) is not 16 hex digits")
    }
    guard value <= UInt64(Int64.max) else {
        throw EStargzError.invalidFooter("TOC offset 0x\(text) does not fit a signed 64-bit offset")
    }
    return Int64(value)
}
