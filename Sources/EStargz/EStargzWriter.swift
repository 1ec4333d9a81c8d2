import Archive
import Crypto
import OCI

/// Settings of an eStargz conversion.
public struct EStargzWriterOptions: Sendable {
    /// Uncompressed size of a payload chunk (each chunk is its own gzip member). Default 4 MiB, as the reference.
    public var chunkSize: Int
    /// ISA-L gzip level 0...3.
    public var compressionLevel: Int

    public init(chunkSize: Int = 4 << 20, compressionLevel: Int = 1) {
        precondition(chunkSize > 0, "chunk size must be positive")
        precondition((0...3).contains(compressionLevel), "ISA-L supports levels 0...3")
        self.chunkSize = chunkSize
        self.compressionLevel = compressionLevel
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
    public var toc: TOC

    /// Layer descriptor annotations the reference sets.
    public var annotations: [String: String] {
        [tocDigestAnnotation: tocDigest.description, uncompressedSizeAnnotation: String(uncompressedSize)]
    }
}

/// Converts an uncompressed layer tar into an eStargz blob, written through a sink.
///
/// Layout as the reference `estargz.Writer` (non-lossless mode): `.no.prefetch.landmark` first; tar headers go into
/// the currently open gzip member; a new member starts at the payload of every non-empty regular file and at every
/// chunk boundary; the tar padding after the last chunk stays in that chunk's member; the input's end-of-archive
/// blocks are dropped; then the TOC member (`stargz.index.json` + end-of-archive) and the 51-byte footer.
public final class EStargzWriter {
    public let options: EStargzWriterOptions
    private let sink: ([UInt8]) throws -> Void

    private var blobOffset: Int64 = 0
    private var blobHasher = SHA256()
    private var diffHasher = SHA256()
    private var uncompressedSize: Int64 = 0
    private var member: GzipCompressor?
    private var entries: [TOCEntry] = []
    private var lastUserNames: [Int: String] = [:]
    private var lastGroupNames: [Int: String] = [:]

    public init(options: EStargzWriterOptions = EStargzWriterOptions(), sink: @escaping ([UInt8]) throws -> Void) {
        self.options = options
        self.sink = sink
    }

    /// Converts the whole tar read by `reader`. Call once per writer.
    public func convert(_ reader: TarReader) throws -> EStargzResult {
        precondition(entries.isEmpty && blobOffset == 0, "EStargzWriter.convert called twice")
        try appendFile(TarHeader(name: noPrefetchLandmarkName, type: .regular, mode: 0, size: 1), contents: [0x0f])
        while let header = try reader.next() {
            let clean = cleanEntryName(header.name)
            if clean == estargzTOCName || clean == noPrefetchLandmarkName || clean == prefetchLandmarkName {
                try reader.drainEntry()
                continue
            }
            try append(header, from: reader)
        }
        try reader.drain()
        try closeMember()

        // TOC member.
        let tocOffset = blobOffset
        let toc = TOC(entries: entries)
        let json = toc.jsonBytes()
        var tw = TarWriter()
        try tw.write(TarHeader(name: estargzTOCName, type: .regular, mode: 0), contents: json)
        try tw.finish()
        try writeUncompressed(tw.bytes)
        try closeMember()
        try emit(estargzFooter(tocOffset: tocOffset))

        return EStargzResult(
            blobDigest: OCI.Digest(sha256: blobHasher.finalize()), blobSize: blobOffset,
            tocDigest: OCI.Digest.sha256(of: json), diffID: OCI.Digest(sha256: diffHasher.finalize()),
            uncompressedSize: uncompressedSize, tocOffset: tocOffset, toc: toc)
    }

    // MARK: - Entries

    private func tocEntry(for h: TarHeader, name: String) throws -> TOCEntry {
        var e = TOCEntry(name: name, type: "")
        e.mode = Int64(h.mode)
        e.uid = h.uid
        e.gid = h.gid
        e.userName = EStargzWriter.nameIfChanged(&lastUserNames, h.uid, h.uname)
        e.groupName = EStargzWriter.nameIfChanged(&lastGroupNames, h.gid, h.gname)
        e.modtime = formatModtime(h.mtime)
        e.xattrs = h.xattrs
        switch h.type {
        case .hardLink: e.type = "hardlink"; e.linkName = h.linkName
        case .symbolicLink: e.type = "symlink"; e.linkName = h.linkName
        case .directory: e.type = "dir"
        case .regular: e.type = "reg"; e.size = h.size
        case .characterDevice: e.type = "char"; e.devMajor = Int(h.devMajor); e.devMinor = Int(h.devMinor)
        case .blockDevice: e.type = "block"; e.devMajor = Int(h.devMajor); e.devMinor = Int(h.devMinor)
        case .fifo: e.type = "fifo"
        case .other(let flag):
            throw EStargzError.invalidInput("unsupported tar entry type \(UnicodeScalar(flag)) for \(h.name)")
        }
        return e
    }

    private static func nameIfChanged(_ map: inout [Int: String], _ id: Int, _ name: String) -> String {
        if name.isEmpty || map[id] == name { return "" }
        map[id] = name
        return name
    }

    /// Header bytes (PAX + ustar) of `h`, and the name as it is stored in the tar.
    private func headerBytes(_ h: TarHeader) throws -> (bytes: [UInt8], name: String) {
        var tw = TarWriter()
        try tw.writeHeader(h)
        var name = h.name
        if h.type == .directory, !name.hasSuffix("/") { name += "/" }
        return (tw.bytes, name)
    }

    private func append(_ header: TarHeader, from reader: TarReader) throws {
        var h = header
        if h.type != .regular { h.size = 0 }
        let (bytes, name) = try headerBytes(h)
        let entry = try tocEntry(for: h, name: name)
        try writeUncompressed(bytes)
        guard h.type == .regular, h.size > 0 else {
            var entry = entry
            // The reference records the (empty) content digest on every regular file.
            if h.type == .regular { entry.digest = OCI.Digest.sha256(of: [UInt8]()).description }
            entries.append(entry)
            try reader.drainEntry()
            return
        }
        var chunks = ChunkState(writer: self, entry: entry, total: h.size)
        try chunks.begin()
        try reader.readContents { piece in try chunks.feed(piece) }
        guard chunks.written == h.size else {
            throw EStargzError.invalidInput("\(h.name): body shorter than its size")
        }
        _ = chunks.finish()
        try writePadding(h.size)
    }

    private func appendFile(_ header: TarHeader, contents: [UInt8]) throws {
        let (bytes, name) = try headerBytes(header)
        let entry = try tocEntry(for: header, name: name)
        try writeUncompressed(bytes)
        var chunks = ChunkState(writer: self, entry: entry, total: Int64(contents.count))
        try chunks.begin()
        try contents.withUnsafeBytes { try chunks.feed($0) }
        _ = chunks.finish()
        try writePadding(Int64(contents.count))
    }

    private func writePadding(_ size: Int64) throws {
        let pad = Int((512 - size % 512) % 512)
        if pad > 0 { try writeUncompressed([UInt8](repeating: 0, count: pad)) }
    }

    /// Splits one file's payload into chunks, each starting a new gzip member.
    private struct ChunkState {
        let writer: EStargzWriter
        var entry: TOCEntry
        let total: Int64
        var written: Int64 = 0
        var inChunk: Int64 = 0
        var chunkLength: Int64 = 0
        var chunkHasher = SHA256()
        var fileHasher = SHA256()
        var firstIndex = -1

        init(writer: EStargzWriter, entry: TOCEntry, total: Int64) {
            self.writer = writer
            self.entry = entry
            self.total = total
        }

        mutating func begin() throws {
            try writer.closeMember()
            let size = Int64(writer.options.chunkSize)
            let remain = total - written
            if remain < size {
                chunkLength = remain
                entry.chunkSize = 0
            } else {
                chunkLength = size
                entry.chunkSize = size
            }
            entry.offset = writer.blobOffset
            entry.chunkOffset = written
            inChunk = 0
            chunkHasher = SHA256()
        }

        mutating func endChunk() {
            entry.chunkDigest = OCI.Digest(sha256: chunkHasher.finalize()).description
            writer.entries.append(entry)
            if firstIndex < 0 { firstIndex = writer.entries.count - 1 }
            entry = TOCEntry(name: entry.name, type: "chunk")
        }

        mutating func feed(_ data: UnsafeRawBufferPointer) throws {
            var rest = data
            while !rest.isEmpty {
                if inChunk == chunkLength {
                    endChunk()
                    try begin()
                }
                let n = Int(min(Int64(rest.count), chunkLength - inChunk))
                let piece = UnsafeRawBufferPointer(rebasing: rest[..<n])
                chunkHasher.update(bufferPointer: piece)
                fileHasher.update(bufferPointer: piece)
                try writer.writeUncompressed(piece)
                inChunk += Int64(n)
                written += Int64(n)
                rest = UnsafeRawBufferPointer(rebasing: rest[n...])
            }
        }

        /// Records the last chunk and the file digest; returns the file's `reg` entry.
        mutating func finish() -> TOCEntry {
            endChunk()
            writer.entries[firstIndex].digest = OCI.Digest(sha256: fileHasher.finalize()).description
            return writer.entries[firstIndex]
        }
    }

    // MARK: - Output

    private func emit(_ bytes: [UInt8]) throws {
        blobHasher.update(data: bytes)
        blobOffset += Int64(bytes.count)
        try sink(bytes)
    }

    fileprivate func writeUncompressed(_ bytes: UnsafeRawBufferPointer) throws {
        if member == nil { member = GzipCompressor(level: options.compressionLevel) }
        diffHasher.update(bufferPointer: bytes)
        uncompressedSize += Int64(bytes.count)
        try member!.compress(bytes) { try emit($0) }
    }

    private func writeUncompressed(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try writeUncompressed($0) }
    }

    fileprivate func closeMember() throws {
        guard let m = member else { return }
        member = nil
        try m.finish { try emit($0) }
    }
}

extension TarReader {
    /// Skips whatever is left of the current entry's body.
    func drainEntry() throws {
        try readContents { _ in }
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
    var seconds = t.seconds
    if t.nanoseconds >= 500_000_000 { seconds += 1 }
    if seconds == 0 && t.nanoseconds == 0 { return "" }
    if t.seconds == 0 && t.nanoseconds == 0 { return "" }
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
