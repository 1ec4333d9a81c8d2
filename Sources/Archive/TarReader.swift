/// A pull-style source of bytes for `TarReader`.
public protocol TarByteSource {
    /// Returns the next run of bytes (may be empty only at end), or nil at end of stream.
    /// The returned memory must stay valid until the next call.
    mutating func nextBytes() throws -> UnsafeRawBufferPointer?
}

/// Streaming tar reader: ustar, PAX (`x`, `g`), GNU long names (`L`, `K`), base-256 numbers.
///
/// Never allocates by header size: entry bodies are streamed via `readContents(_:)`; metadata
/// records (PAX, GNU long names) are accumulated incrementally and capped at `maxMetadataSize`.
public final class TarReader {
    /// Upper bound for PAX and GNU long-name records.
    public static let maxMetadataSize: Int64 = 8 << 20

    private var source: any TarByteSource
    private var current = UnsafeRawBufferPointer(start: nil, count: 0)
    private var position = 0
    private var sourceAtEnd = false
    private var finished = false
    /// Number of tar bytes consumed so far.
    public private(set) var offset: Int64 = 0
    private var bodyRemaining: Int64 = 0
    private var paddingRemaining: Int64 = 0
    private var globalRecords: [String: [UInt8]] = [:]
    private let headerBlock = UnsafeMutableRawBufferPointer.allocate(byteCount: 512, alignment: 16)

    public init(source: some TarByteSource) {
        self.source = source
    }

    /// Reads an in-memory tar.
    public convenience init(bytes: [UInt8]) {
        self.init(source: ArrayByteSource(bytes))
    }

    deinit { headerBlock.deallocate() }

    // MARK: - Low-level byte access

    @inline(__always)
    private func available() throws -> Int {
        if position < current.count { return current.count - position }
        if sourceAtEnd { return 0 }
        while true {
            guard let next = try source.nextBytes() else {
                sourceAtEnd = true
                current = UnsafeRawBufferPointer(start: nil, count: 0)
                position = 0
                return 0
            }
            if next.count > 0 {
                current = next
                position = 0
                return next.count
            }
        }
    }

    /// Copies up to 512 bytes into `headerBlock`; returns bytes read (less than 512 only at EOF).
    private func readHeaderBlock() throws -> Int {
        var filled = 0
        while filled < 512 {
            let avail = try available()
            if avail == 0 { break }
            let n = min(avail, 512 - filled)
            UnsafeMutableRawBufferPointer(rebasing: headerBlock[filled..<(filled + n)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: current[position..<(position + n)]))
            position += n
            filled += n
        }
        offset += Int64(filled)
        return filled
    }

    private func skip(_ count: Int64, what: String) throws {
        var remaining = count
        while remaining > 0 {
            let avail = try available()
            if avail == 0 {
                throw ArchiveError(.truncated(detail: "unexpected end of stream in \(what) at offset \(offset)"))
            }
            let n = Int(min(Int64(avail), remaining))
            position += n
            remaining -= Int64(n)
            offset += Int64(n)
        }
    }

    // MARK: - Entry bodies

    /// Streams the (remaining) body of the current entry to `body`, in pieces as they arrive.
    public func readContents(_ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        while bodyRemaining > 0 {
            let avail = try available()
            if avail == 0 {
                throw ArchiveError(
                    .truncated(detail: "entry body ends early at offset \(offset), \(bodyRemaining) bytes missing"))
            }
            let n = Int(min(Int64(avail), bodyRemaining))
            let piece = UnsafeRawBufferPointer(rebasing: current[position..<(position + n)])
            position += n
            bodyRemaining -= Int64(n)
            offset += Int64(n)
            try body(piece)
        }
    }

    /// Reads the remaining body of the current entry into memory (use for small entries only).
    public func readContents() throws -> [UInt8] {
        var out: [UInt8] = []
        try readContents { out.append(contentsOf: $0) }
        return out
    }

    /// Consumes and discards everything left in the underlying stream (e.g. after the end marker),
    /// so that a hashing producer sees the whole stream.
    public func drain() throws {
        while try available() > 0 {
            offset += Int64(current.count - position)
            position = current.count
        }
    }

    private func readMetadata(size: Int64, what: String) throws -> [UInt8] {
        if size > TarReader.maxMetadataSize {
            throw ArchiveError(.limitExceeded(detail: "\(what) record of \(size) bytes at offset \(offset)"))
        }
        bodyRemaining = size
        paddingRemaining = (512 - size % 512) % 512
        let data = try readContents()
        try skip(paddingRemaining, what: "padding")
        paddingRemaining = 0
        return data
    }

    // MARK: - Headers

    /// Returns the next entry header, or nil at the end of the archive (two zero blocks or clean EOF).
    /// Any unread body of the previous entry is skipped.
    public func next() throws -> TarHeader? {
        if finished { return nil }
        if bodyRemaining > 0 { try skip(bodyRemaining, what: "entry body") }
        bodyRemaining = 0
        if paddingRemaining > 0 { try skip(paddingRemaining, what: "entry padding") }
        paddingRemaining = 0

        var localRecords: [String: [UInt8]] = [:]
        var longName: [UInt8]?
        var longLink: [UInt8]?
        var pendingMetadata = false
        var zeroBlocks = 0

        while true {
            let headerOffset = offset
            let n = try readHeaderBlock()
            if n == 0 {
                finished = true
                if pendingMetadata {
                    throw ArchiveError(.truncated(detail: "archive ends after an extended header"))
                }
                return nil
            }
            if n < 512 {
                throw ArchiveError(.truncated(detail: "partial header block (\(n) bytes) at offset \(headerOffset)"))
            }
            let block = UnsafeRawBufferPointer(headerBlock)
            if TarReader.isZero(block) {
                zeroBlocks += 1
                if zeroBlocks == 2 {
                    finished = true
                    return nil
                }
                continue
            }
            zeroBlocks = 0
            try TarReader.verifyChecksum(block, offset: headerOffset)
            let flag = block[156]
            let size = try TarReader.parseNumeric(block, 124, 12, offset: headerOffset)
            if size < 0 {
                throw ArchiveError(.invalidHeader(offset: headerOffset, detail: "negative size"))
            }
            switch flag {
            case UInt8(ascii: "x"):
                let data = try readMetadata(size: size, what: "PAX header")
                for (k, v) in try TarReader.parsePAX(data, offset: headerOffset) { localRecords[k] = v }
                try TarReader.checkRecordBudget(localRecords, what: "extended header records for one entry", offset: headerOffset)
                pendingMetadata = true
                continue
            case UInt8(ascii: "g"):
                let data = try readMetadata(size: size, what: "PAX global header")
                for (k, v) in try TarReader.parsePAX(data, offset: headerOffset) {
                    if v.isEmpty { globalRecords.removeValue(forKey: k) } else { globalRecords[k] = v }
                }
                // Global records are copied into every later entry, so they get a far smaller budget.
                try TarReader.checkRecordBudget(globalRecords, what: "global extended header records", offset: headerOffset, limit: 64 << 10)
                continue
            case UInt8(ascii: "L"):
                longName = TarReader.trimNUL(try readMetadata(size: size, what: "GNU long name"))
                pendingMetadata = true
                continue
            case UInt8(ascii: "K"):
                longLink = TarReader.trimNUL(try readMetadata(size: size, what: "GNU long link"))
                pendingMetadata = true
                continue
            default:
                break
            }

            var header = try TarReader.parseUstar(block, offset: headerOffset, size: size)
            if let longName { header.name = String(decoding: longName, as: UTF8.self) }
            if let longLink { header.linkName = String(decoding: longLink, as: UTF8.self) }
            var records = globalRecords
            for (k, v) in localRecords { records[k] = v }
            if !records.isEmpty { try TarReader.apply(records, to: &header, offset: headerOffset) }
            if header.type == .regular, flag == 0, header.name.hasSuffix("/") {
                header.type = .directory  // pre-POSIX directory convention
            }
            switch header.type {
            case .regular, .other:
                break
            default:
                header.size = 0  // header-only types carry no body
            }
            bodyRemaining = header.size
            paddingRemaining = (512 - header.size % 512) % 512
            return header
        }
    }

    // MARK: - Parsing helpers

    static func isZero(_ block: UnsafeRawBufferPointer) -> Bool {
        let words = block.bindMemory(to: UInt64.self)
        for w in words where w != 0 { return false }
        return true
    }

    static func verifyChecksum(_ b: UnsafeRawBufferPointer, offset: Int64) throws {
        var unsigned: Int64 = 0
        var signed: Int64 = 0
        for i in 0..<512 {
            let v = (i >= 148 && i < 156) ? UInt8(ascii: " ") : b[i]
            unsigned += Int64(v)
            signed += Int64(Int8(bitPattern: v))
        }
        let stored = try parseNumeric(b, 148, 8, offset: offset)
        if stored != unsigned && stored != signed {
            throw ArchiveError(
                .invalidHeader(offset: offset, detail: "checksum mismatch (stored \(stored), computed \(unsigned))"))
        }
    }

    static func parseNumeric(_ b: UnsafeRawBufferPointer, _ start: Int, _ len: Int, offset: Int64) throws -> Int64 {
        let first = b[start]
        if first & 0x80 != 0 {
            // base-256, two's complement; bit 6 of the first byte is the sign.
            let negative = first & 0x40 != 0
            var value: Int64 = negative ? -1 : 0
            var significant = 0
            for i in start..<(start + len) {
                var byte = b[i]
                if i == start { byte = negative ? (byte | 0x80) : (byte & 0x7f) }
                if significant > 0 || byte != (negative ? 0xff : 0) { significant += 1 }
                // Eight significant bytes fit only if the top one agrees with the sign (bit 63 of the result).
                if significant > 8 || (significant == 1 && i == start + len - 8 && (byte & 0x80 != 0) != negative) {
                    throw ArchiveError(.invalidHeader(offset: offset, detail: "base-256 number overflows"))
                }
                value = (value << 8) | Int64(byte)
            }
            return value
        }
        var i = start
        let end = start + len
        while i < end, b[i] == UInt8(ascii: " ") || b[i] == 0 { i += 1 }
        var value: Int64 = 0
        while i < end {
            let c = b[i]
            if c == UInt8(ascii: " ") || c == 0 { break }
            guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "7") else {
                throw ArchiveError(.invalidHeader(offset: offset, detail: "invalid octal digit in numeric field at \(start)"))
            }
            if value > (Int64.max >> 3) {
                throw ArchiveError(.invalidHeader(offset: offset, detail: "octal number overflows"))
            }
            value = value * 8 + Int64(c - UInt8(ascii: "0"))
            i += 1
        }
        return value
    }

    static func string(_ b: UnsafeRawBufferPointer, _ start: Int, _ len: Int) -> String {
        var end = start
        while end < start + len, b[end] != 0 { end += 1 }
        return String(decoding: UnsafeRawBufferPointer(rebasing: b[start..<end]), as: UTF8.self)
    }

    static func trimNUL(_ bytes: [UInt8]) -> [UInt8] {
        var b = bytes
        while let last = b.last, last == 0 { b.removeLast() }
        return b
    }

    static func parseUstar(_ b: UnsafeRawBufferPointer, offset: Int64, size: Int64) throws -> TarHeader {
        var name = string(b, 0, 100)
        let isPOSIX = b[257] == UInt8(ascii: "u") && b[258] == UInt8(ascii: "s") && b[259] == UInt8(ascii: "t")
            && b[260] == UInt8(ascii: "a") && b[261] == UInt8(ascii: "r") && b[262] == 0
        let isGNU = b[257] == UInt8(ascii: "u") && b[262] == UInt8(ascii: " ")
        if isPOSIX {
            let prefix = string(b, 345, 155)
            if !prefix.isEmpty { name = prefix + "/" + name }
        }
        let hasUstarFields = isPOSIX || isGNU
        let mode = try parseNumeric(b, 100, 8, offset: offset)
        let mtime = try parseNumeric(b, 136, 12, offset: offset)
        return TarHeader(
            name: name,
            type: TarEntryType(flag: b[156]),
            mode: UInt32(truncatingIfNeeded: mode) & 0o7777,
            uid: Int(try parseNumeric(b, 108, 8, offset: offset)),
            gid: Int(try parseNumeric(b, 116, 8, offset: offset)),
            uname: hasUstarFields ? string(b, 265, 32) : "",
            gname: hasUstarFields ? string(b, 297, 32) : "",
            size: size,
            mtime: TarTimestamp(seconds: mtime),
            linkName: string(b, 157, 100),
            devMajor: hasUstarFields ? UInt32(truncatingIfNeeded: try parseNumeric(b, 329, 8, offset: offset)) : 0,
            devMinor: hasUstarFields ? UInt32(truncatingIfNeeded: try parseNumeric(b, 337, 8, offset: offset)) : 0
        )
    }

    /// Parses PAX records `"<len> <key>=<value>\n"`.
    static func parsePAX(_ data: [UInt8], offset: Int64) throws -> [(String, [UInt8])] {
        var out: [(String, [UInt8])] = []
        var i = 0
        func bad(_ why: String) -> ArchiveError {
            ArchiveError(.invalidHeader(offset: offset, detail: "malformed PAX record: \(why)"))
        }
        while i < data.count {
            if data[i] == 0 { break }  // tolerate NUL padding
            var len = 0
            var j = i
            while j < data.count, data[j] >= UInt8(ascii: "0"), data[j] <= UInt8(ascii: "9") {
                len = len * 10 + Int(data[j] - UInt8(ascii: "0"))
                if len > data.count { throw bad("length too large") }
                j += 1
            }
            guard j < data.count, data[j] == UInt8(ascii: " "), len > j - i + 1, i + len <= data.count,
                data[i + len - 1] == UInt8(ascii: "\n")
            else { throw bad("bad length") }
            let record = data[(j + 1)..<(i + len - 1)]
            guard let eq = record.firstIndex(of: UInt8(ascii: "=")) else { throw bad("missing '='") }
            let key = String(decoding: record[record.startIndex..<eq], as: UTF8.self)
            out.append((key, Array(record[(eq + 1)...])))
            i += len
        }
        return out
    }

    /// Records may repeat across chained headers; their total is bounded so a layer cannot make every entry
    /// carry megabytes of metadata.
    static func checkRecordBudget(_ records: [String: [UInt8]], what: String, offset: Int64, limit: Int = 8 << 20) throws {
        let total = records.reduce(0) { $0 + $1.key.utf8.count + $1.value.count }
        guard total <= limit, records.count <= 10_000 else {
            throw ArchiveError(.limitExceeded(detail: "\(what) exceed \(limit) bytes or 10,000 records at offset \(offset)"))
        }
    }

    static func apply(_ records: [String: [UInt8]], to h: inout TarHeader, offset: Int64) throws {
        func int(_ v: [UInt8], _ key: String) throws -> Int64 {
            guard let n = Int64(String(decoding: v, as: UTF8.self)) else {
                throw ArchiveError(.invalidHeader(offset: offset, detail: "bad PAX \(key) value"))
            }
            return n
        }
        for (key, value) in records {
            // An empty value deletes the record: the ustar field stands (POSIX pax, "keyword=" with no value).
            if value.isEmpty && !key.hasPrefix("SCHILY.xattr.") { continue }
            switch key {
            case "path": h.name = String(decoding: value, as: UTF8.self)
            case "linkpath": h.linkName = String(decoding: value, as: UTF8.self)
            case "size":
                h.size = try int(value, key)
                if h.size < 0 { throw ArchiveError(.invalidHeader(offset: offset, detail: "negative PAX size")) }
            case "uid": h.uid = Int(try int(value, key))
            case "gid": h.gid = Int(try int(value, key))
            case "uname": h.uname = String(decoding: value, as: UTF8.self)
            case "gname": h.gname = String(decoding: value, as: UTF8.self)
            case "mtime":
                guard let t = parseTime(value) else {
                    throw ArchiveError(.invalidHeader(offset: offset, detail: "bad PAX mtime"))
                }
                h.mtime = t
            default:
                if key.hasPrefix("SCHILY.xattr.") {
                    h.xattrs[String(key.dropFirst("SCHILY.xattr.".count))] = value
                } else if key.hasPrefix("GNU.sparse.") {
                    // PAX sparse files carry a sparse map inside their data; writing that as content would
                    // silently corrupt the file.
                    throw ArchiveError(.unsupportedEntryType(entry: h.name, type: "PAX sparse file (\(key))"))
                }
            }
        }
    }

    static func parseTime(_ v: [UInt8]) -> TarTimestamp? {
        let s = String(decoding: v, as: UTF8.self)
        let parts = s.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let first = parts.first, let secs = Int64(first) else { return nil }
        var nanos: Int32 = 0
        if parts.count == 2 {
            var digits = Array(parts[1].prefix(9))
            guard digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
            while digits.count < 9 { digits.append("0") }
            nanos = Int32(String(digits)) ?? 0
        }
        if first.hasPrefix("-") && nanos != 0 {
            // -1.5 means 1.5 seconds before the epoch
            let (earlier, overflow) = secs.subtractingReportingOverflow(1)
            guard !overflow else { return nil }
            return TarTimestamp(seconds: earlier, nanoseconds: 1_000_000_000 - nanos)
        }
        return TarTimestamp(seconds: secs, nanoseconds: nanos)
    }
}

/// A `TarByteSource` over an in-memory byte array (returned in one piece).
public struct ArrayByteSource: TarByteSource {
    private final class Storage {
        let buffer: UnsafeMutableRawBufferPointer
        init(_ bytes: [UInt8]) {
            buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
            bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
        }
        deinit { buffer.deallocate() }
    }
    private let storage: Storage
    private let count: Int
    private var delivered = 0
    /// Deliver the bytes in pieces of this size (useful to test chunk boundaries).
    private let pieceSize: Int

    public init(_ bytes: [UInt8], pieceSize: Int = Int.max) {
        storage = Storage(bytes)
        count = bytes.count
        self.pieceSize = max(1, pieceSize)
    }

    public mutating func nextBytes() throws -> UnsafeRawBufferPointer? {
        if delivered >= count { return nil }
        let n = min(pieceSize, count - delivered)
        defer { delivered += n }
        return UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(storage.buffer)[delivered..<(delivered + n)])
    }
}
