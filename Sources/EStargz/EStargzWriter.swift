import Archive
import Crypto
import Foundation
import OCI

/// Settings of an eStargz conversion.
public struct EStargzWriterOptions: Sendable {
    /// Uncompressed size of a payload chunk (each chunk is its own gzip member). Default 4 MiB, as the reference.
    public var chunkSize: Int
    /// gzip level: 0...9 as gzip, 10...12 libdeflate's slower, smaller levels.
    public var compressionLevel: Int
    /// Files to put first, in access order (each parent directory and hard link target moves with it); they are
    /// followed by `.prefetch.landmark`. Empty: the layer keeps its order behind `.no.prefetch.landmark`.
    public var prioritizedFiles: [String]
    /// Whether prioritized files missing from the layer are skipped (and reported) instead of an error.
    public var allowMissingPrioritizedFiles: Bool
    /// Where a layer is held aside while it is reordered (only with prioritized files).
    public var spoolDirectory: String
    /// Compression threads.
    public var workers: Int

    public static let defaultCompressionLevel = 6
    public static let compressionLevels = 0...12

    public init(
        chunkSize: Int = 4 << 20, compressionLevel: Int = defaultCompressionLevel, prioritizedFiles: [String] = [],
        allowMissingPrioritizedFiles: Bool = false, spoolDirectory: String = NSTemporaryDirectory(),
        workers: Int = ProcessInfo.processInfo.activeProcessorCount
    ) {
        precondition(chunkSize > 0, "chunk size must be positive")
        precondition(Self.compressionLevels.contains(compressionLevel), "gzip levels are 0...12")
        self.chunkSize = chunkSize
        self.compressionLevel = compressionLevel
        self.prioritizedFiles = prioritizedFiles
        self.allowMissingPrioritizedFiles = allowMissingPrioritizedFiles
        self.spoolDirectory = spoolDirectory
        self.workers = max(1, workers)
    }
}

/// What an eStargz conversion produced.
public struct EStargzResult: Sendable {
    /// sha256 of the eStargz blob (the layer digest).
    public var blobDigest: OCI.Digest
    public var blobSize: Int64
    /// sha256 of the uncompressed TOC JSON (annotation `containerd.io/snapshot/stargz/toc.digest`).
    public var tocDigest: OCI.Digest
    /// sha256 of the uncompressed tar the blob decompresses to (the new diffID).
    public var diffID: OCI.Digest
    /// Size of that uncompressed tar (annotation `io.containers.estargz.uncompressed-size`).
    public var uncompressedSize: Int64
    /// Compressed offset of the TOC member (as written in the footer).
    public var tocOffset: Int64
    /// Bytes before `.prefetch.landmark`: what a lazy reader prefetches (0 without prioritized files).
    public var prefetchSize: Int64
    /// Prioritized files the layer does not contain (only with `allowMissingPrioritizedFiles`).
    public var missingPrioritizedFiles: [String]
    public var toc: TOC

    /// Layer descriptor annotations the reference sets.
    public var annotations: [String: String] {
        [tocDigestAnnotation: tocDigest.description, uncompressedSizeAnnotation: String(uncompressedSize)]
    }
}

/// Converts an uncompressed layer tar into an eStargz blob, written through a sink.
///
/// Layout as the reference `estargz.Writer` (non-lossless mode): a landmark first (or the prioritized files, then
/// `.prefetch.landmark`); tar headers go into the currently open gzip member; a new member starts at the payload of
/// every non-empty regular file and at every chunk boundary; the tar padding after the last chunk stays in that
/// chunk's member; the input's end-of-archive blocks are dropped; then the TOC member (`stargz.index.json` +
/// end-of-archive) and the 51-byte footer.
///
/// Members are independent, so they are compressed on worker threads while this thread keeps reading; offsets
/// and chunk digests are filled into the TOC once the members come back in order.
public final class EStargzWriter {
    public let options: EStargzWriterOptions
    private let sink: ([UInt8]) throws -> Void

    private var compressor: ParallelMemberCompressor?
    private var batch = MemberBatch()
    /// Uncompressed bytes of the open member; `memberPayload` leading bytes of it are a chunk of file payload.
    private var member: [UInt8] = []
    private var memberPayload = 0
    private var membersClosed = 0
    private var memberOffsets: [Int64] = []
    private var memberDigests: [OCI.Digest?] = []
    /// TOC entries whose offset and chunkDigest come from member `member`; `wholeFile` entries also take the
    /// chunk digest as the file digest (a file of one chunk).
    private var payloadEntries: [(entry: Int, member: Int, wholeFile: Bool)] = []

    private var blobOffset: Int64 = 0
    private var blobHasher = SHA256()
    private var diffHasher = SHA256()
    private var uncompressedSize: Int64 = 0
    private var entries: [TOCEntry] = []
    private var lastUserNames: [Int: String] = [:]
    private var lastGroupNames: [Int: String] = [:]

    public init(options: EStargzWriterOptions = EStargzWriterOptions(), sink: @escaping ([UInt8]) throws -> Void) {
        self.options = options
        self.sink = sink
    }

    static func isGeneratedName(_ cleanName: String) -> Bool {
        cleanName == estargzTOCName || cleanName == noPrefetchLandmarkName || cleanName == prefetchLandmarkName
    }

    /// Converts the whole tar read by `reader`. Call once per writer.
    public func convert(_ reader: TarReader) throws -> EStargzResult {
        precondition(compressor == nil && entries.isEmpty, "EStargzWriter.convert called twice")
        let compressor = try ParallelMemberCompressor(level: options.compressionLevel, workers: options.workers)
        self.compressor = compressor
        defer { compressor.shutdown() }

        var missing: [String] = []
        var landmarkEntry: Int?
        if options.prioritizedFiles.isEmpty {
            try appendLandmark(noPrefetchLandmarkName)
            while let header = try reader.next() {
                if Self.isGeneratedName(cleanEntryName(header.name)) {
                    try reader.readContents { _ in }
                    continue
                }
                try append(header) { try reader.readContents($0) }
            }
            try reader.drain()
        } else {
            let spool = try TarSpool(reading: reader, directory: options.spoolDirectory)
            let order = spool.prioritizedOrder(options.prioritizedFiles)
            guard order.missing.isEmpty || options.allowMissingPrioritizedFiles else {
                throw EStargzError.invalidInput(
                    "prioritized files not in the layer: \(order.missing.prefix(5).joined(separator: ", "))"
                        + (order.missing.count > 5 ? " and \(order.missing.count - 5) more" : ""))
            }
            missing = order.missing
            if order.front.isEmpty {
                // None of the files is in this layer: it keeps its order, as ctr-remote treats such layers.
                try appendLandmark(noPrefetchLandmarkName)
            } else {
                for index in order.front { try append(spool.entries[index].header) { try spool.readBody(index, $0) } }
                landmarkEntry = entries.count
                try appendLandmark(prefetchLandmarkName)
            }
            for index in order.rest { try append(spool.entries[index].header) { try spool.readBody(index, $0) } }
        }
        try closeMember(flush: true)
        try compressor.finish(emit: emit)
        resolvePayloadEntries()

        let tocOffset = blobOffset
        let toc = TOC(entries: entries)
        let json = toc.jsonBytes()
        var tw = TarWriter()
        try tw.write(TarHeader(name: estargzTOCName, type: .regular, mode: 0), contents: json)
        try tw.finish()
        writeUncompressed(tw.bytes)
        try closeMember(flush: true)
        try compressor.finish(emit: emit)
        try emitRaw(estargzFooter(tocOffset: tocOffset))

        return EStargzResult(
            blobDigest: OCI.Digest(sha256: blobHasher.finalize()), blobSize: blobOffset,
            tocDigest: OCI.Digest.sha256(of: json), diffID: OCI.Digest(sha256: diffHasher.finalize()),
            uncompressedSize: uncompressedSize, tocOffset: tocOffset,
            prefetchSize: landmarkEntry.map { entries[$0].offset } ?? 0, missingPrioritizedFiles: missing, toc: toc)
    }

    // MARK: - Entries

    private func tocEntry(for h: TarHeader, name: String) throws -> TOCEntry {
        var e = try TOCEntry(header: h, name: name)
        e.userName = EStargzWriter.nameIfChanged(&lastUserNames, h.uid, h.uname)
        e.groupName = EStargzWriter.nameIfChanged(&lastGroupNames, h.gid, h.gname)
        return e
    }

    private static func nameIfChanged(_ map: inout [Int: String], _ id: Int, _ name: String) -> String {
        if name.isEmpty || map[id] == name { return "" }
        map[id] = name
        return name
    }

    private func appendLandmark(_ name: String) throws {
        try append(TarHeader(name: name, type: .regular, mode: 0, size: 1)) { body in
            try [UInt8(0x0f)].withUnsafeBytes { try body($0) }
        }
    }

    /// Writes one entry: its header into the open member, then its payload (if any) in chunk members. `body` passes
    /// the entry's contents in pieces to the closure it is given.
    private func append(_ header: TarHeader, body: (_ consume: (UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws {
        var h = header
        if h.type != .regular { h.size = 0 }
        var tw = TarWriter()
        try tw.writeHeader(h)
        var name = h.name
        if h.type == .directory, !name.hasSuffix("/") { name += "/" }
        var entry = try tocEntry(for: h, name: name)
        writeUncompressed(tw.bytes)
        guard h.type == .regular, h.size > 0 else {
            // The reference records the (empty) content digest on every regular file.
            if h.type == .regular { entry.digest = OCI.Digest.sha256(of: [UInt8]()).description }
            entries.append(entry)
            try body { _ in }
            return
        }
        var chunks = try ChunkState(writer: self, entry: entry, total: h.size)
        try body { try chunks.feed($0) }
        guard chunks.written == h.size else {
            throw EStargzError.invalidInput("\(h.name): body of \(chunks.written) bytes, header says \(h.size)")
        }
        chunks.finish()
        let pad = Int((512 - h.size % 512) % 512)
        if pad > 0 { writeUncompressed([UInt8](repeating: 0, count: pad)) }
    }

    /// Splits one file's payload into chunks, each starting a new gzip member.
    private struct ChunkState {
        let writer: EStargzWriter
        var entry: TOCEntry
        let total: Int64
        var written: Int64 = 0
        var inChunk: Int64 = 0
        var chunkLength: Int64 = 0
        /// Files of several chunks hash their whole content here; a one-chunk file's digest is its chunk digest.
        var fileHasher: SHA256?
        var firstIndex = -1

        init(writer: EStargzWriter, entry: TOCEntry, total: Int64) throws {
            self.writer = writer
            self.entry = entry
            self.total = total
            fileHasher = total > Int64(writer.options.chunkSize) ? SHA256() : nil
            try begin()
        }

        mutating func begin() throws {
            try writer.closeMember(flush: false)
            chunkLength = min(total - written, Int64(writer.options.chunkSize))
            // A chunk shorter than the chunk size (the last one, or the only one) leaves chunkSize out, as the
            // reference does.
            entry.chunkSize = chunkLength < Int64(writer.options.chunkSize) ? 0 : chunkLength
            entry.chunkOffset = written
            inChunk = 0
            writer.memberPayload = Int(chunkLength)
            writer.member.reserveCapacity(Int(chunkLength) + 4096)
        }

        mutating func endChunk() {
            writer.entries.append(entry)
            let index = writer.entries.count - 1
            if firstIndex < 0 { firstIndex = index }
            writer.payloadEntries.append((index, writer.membersClosed, fileHasher == nil))
            entry = TOCEntry(name: entry.name, type: "chunk")
        }

        mutating func feed(_ data: UnsafeRawBufferPointer) throws {
            var rest = data
            while !rest.isEmpty {
                if inChunk == chunkLength {
                    guard written < total else {
                        throw EStargzError.invalidInput("\(entry.name): body longer than the header's \(total) bytes")
                    }
                    endChunk()
                    try begin()
                }
                let n = Int(min(Int64(rest.count), chunkLength - inChunk))
                let piece = UnsafeRawBufferPointer(rebasing: rest[..<n])
                fileHasher?.update(bufferPointer: piece)
                writer.writeUncompressed(piece)
                inChunk += Int64(n)
                written += Int64(n)
                rest = UnsafeRawBufferPointer(rebasing: rest[n...])
            }
        }

        mutating func finish() {
            endChunk()
            if let fileHasher {
                writer.entries[firstIndex].digest = OCI.Digest(sha256: fileHasher.finalize()).description
            }
        }
    }

    /// Fills in offsets and digests once every member is compressed and placed.
    private func resolvePayloadEntries() {
        for (entry, member, wholeFile) in payloadEntries {
            entries[entry].offset = memberOffsets[member]
            let digest = memberDigests[member]?.description ?? ""
            entries[entry].chunkDigest = digest
            if wholeFile { entries[entry].digest = digest }
        }
    }

    // MARK: - Output

    private func writeUncompressed(_ bytes: UnsafeRawBufferPointer) {
        diffHasher.update(bufferPointer: bytes)
        uncompressedSize += Int64(bytes.count)
        member.append(contentsOf: bytes)
    }

    private func writeUncompressed(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { writeUncompressed($0) }
    }

    /// Ends the open member (if any bytes are in it); `flush` also submits a partly filled batch.
    private func closeMember(flush: Bool) throws {
        if !member.isEmpty {
            batch.add(member, payloadLength: memberPayload)
            member = []
            memberPayload = 0
            membersClosed += 1
        }
        if !batch.members.isEmpty, flush || batch.isFull {
            let full = batch
            batch = MemberBatch()
            try compressor!.submit(full, emit: emit)
        }
    }

    private func emit(_ batch: MemberBatch) throws {
        for (bytes, digest) in zip(batch.compressed, batch.payloadDigests) {
            memberOffsets.append(blobOffset)
            memberDigests.append(digest)
            try emitRaw(bytes)
        }
    }

    private func emitRaw(_ bytes: [UInt8]) throws {
        blobHasher.update(data: bytes)
        blobOffset += Int64(bytes.count)
        try sink(bytes)
    }
}

/// The 51-byte eStargz footer: an empty gzip member whose Extra field (`SG` subfield) holds the TOC offset.
public func estargzFooter(tocOffset: Int64) -> [UInt8] {
    var b: [UInt8] = [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 26, 0, UInt8(ascii: "S"), UInt8(ascii: "G"), 22, 0]
    let hex = String(UInt64(bitPattern: tocOffset), radix: 16)
    b += Array(String(repeating: "0", count: max(0, 16 - hex.count)).utf8) + Array(hex.utf8)
    b += Array("STARGZ".utf8)
    b += [0x01, 0x00, 0x00, 0xff, 0xff]
    b += [UInt8](repeating: 0, count: 8)
    assert(b.count == estargzFooterSize)
    return b
}

/// `path.Clean("/" + name)` without the leading `/`, as the reference normalises TOC names.
public func cleanEntryName(_ name: String) -> String {
    var parts: [Substring] = []
    for part in name.split(separator: "/", omittingEmptySubsequences: true) {
        if part == "." { continue }
        if part == ".." {
            if !parts.isEmpty { parts.removeLast() }
            continue
        }
        parts.append(part)
    }
    return parts.joined(separator: "/")
}

/// RFC 3339 UTC, rounded to seconds; empty for Unix time 0 (as the reference `formatModtime`).
func formatModtime(_ t: TarTimestamp) -> String {
    if t.seconds == 0 && t.nanoseconds == 0 { return "" }
    // RFC 3339 years have four digits: a PAX mtime beyond them (up to Int64's ends) is clamped to 0000–9999 rather
    // than written as a date no reader parses; the extracted file keeps its exact mtime, only the TOC's copy is
    // clamped.
    let earliest: Int64 = -62_167_219_200  // 0000-01-01T00:00:00Z
    let latest: Int64 = 253_402_300_799  // 9999-12-31T23:59:59Z
    var seconds = min(max(t.seconds, earliest), latest)
    if t.nanoseconds >= 500_000_000, seconds < latest { seconds += 1 }
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
    let secOfDay = seconds - days * 86400
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
    var y = yoe + era * 400
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let d = doy - (153 * mp + 2) / 5 + 1
    let m = mp < 10 ? mp + 3 : mp - 9
    if m <= 2 { y += 1 }
    func pad(_ v: Int64, _ w: Int) -> String {
        let s = String(v)
        return String(repeating: "0", count: max(0, w - s.count)) + s
    }
    return "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2))T\(pad(secOfDay / 3600, 2)):\(pad(secOfDay % 3600 / 60, 2)):\(pad(secOfDay % 60, 2))Z"
}
