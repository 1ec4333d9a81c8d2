/// Streaming tar writer producing ustar headers, with PAX extended headers when a field does not fit
/// (long names / link targets, big sizes or ids, sub-second mtimes, xattrs). Optionally GNU `L`/`K`
/// records for long names instead of PAX.
public struct TarWriter {
    public enum LongNameFormat: Sendable { case pax, gnu }

    /// How names/link targets longer than the ustar fields are encoded.
    public var longNameFormat: LongNameFormat
    /// Accumulated output when no sink was given (or not yet flushed to the sink).
    public private(set) var bytes: [UInt8] = []
    /// Total bytes produced so far.
    public private(set) var bytesWritten: Int64 = 0

    private let sink: (([UInt8]) throws -> Void)?
    private let flushThreshold = 1 << 20
    private var bodyRemaining: Int64 = 0
    private var bodyPadding: Int = 0
    private var finished = false

    /// - Parameter sink: receives output in pieces of about 1 MiB; when nil output collects in `bytes`.
    public init(longNameFormat: LongNameFormat = .pax, sink: (([UInt8]) throws -> Void)? = nil) {
        self.longNameFormat = longNameFormat
        self.sink = sink
    }

    /// Writes a complete entry. For regular files `header.size` is set from `contents`.
    public mutating func write(_ header: TarHeader, contents: [UInt8] = []) throws {
        var h = header
        if TarWriter.hasBody(h.type) {
            h.size = Int64(contents.count)
        } else {
            precondition(contents.isEmpty, "only regular files (and raw .other records) have contents")
            h.size = 0
        }
        try writeHeader(h)
        try contents.withUnsafeBytes { try writeContents($0) }
    }

    /// Starts an entry whose body (`header.size` bytes, regular files only) follows through `writeContents`.
    public mutating func writeHeader(_ header: TarHeader) throws {
        precondition(bodyRemaining == 0, "previous entry body incomplete")
        precondition(!finished, "writer already finished")
        var h = header
        if !TarWriter.hasBody(h.type) { h.size = 0 }
        if h.type == .directory, !h.name.hasSuffix("/") { h.name += "/" }

        var pax: [(String, [UInt8])] = []
        var name = h.name
        var prefix = ""
        if let split = TarWriter.splitUstarName(h.name) {
            (prefix, name) = split
        } else if longNameFormat == .gnu {
            try emitGNULong(type: UInt8(ascii: "L"), value: h.name)
            name = TarWriter.truncated(h.name, 100)
        } else {
            pax.append(("path", Array(h.name.utf8)))
            name = TarWriter.truncated(h.name, 100)
        }
        var linkName = h.linkName
        if h.linkName.utf8.count > 100 {
            if longNameFormat == .gnu {
                try emitGNULong(type: UInt8(ascii: "K"), value: h.linkName)
            } else {
                pax.append(("linkpath", Array(h.linkName.utf8)))
            }
            linkName = TarWriter.truncated(h.linkName, 100)
        }
        let maxOctal11: Int64 = 0o77777777777
        let maxOctal7 = 0o7777777
        if h.size > maxOctal11 { pax.append(("size", Array(String(h.size).utf8))) }
        if h.uid > maxOctal7 || h.uid < 0 { pax.append(("uid", Array(String(h.uid).utf8))) }
        if h.gid > maxOctal7 || h.gid < 0 { pax.append(("gid", Array(String(h.gid).utf8))) }
        if h.uname.utf8.count > 32 { pax.append(("uname", Array(h.uname.utf8))) }
        if h.gname.utf8.count > 32 { pax.append(("gname", Array(h.gname.utf8))) }
        if h.mtime.nanoseconds != 0 || h.mtime.seconds < 0 || h.mtime.seconds > maxOctal11 {
            pax.append(("mtime", Array(TarWriter.formatTime(h.mtime).utf8)))
        }
        for key in h.xattrs.keys.sorted() {
            pax.append(("SCHILY.xattr." + key, h.xattrs[key]!))
        }
        if !pax.isEmpty {
            var data: [UInt8] = []
            for (k, v) in pax { data += TarWriter.paxRecord(k, v) }
            let base = h.name.split(separator: "/").last.map(String.init) ?? "entry"
            var xh = TarHeader(name: TarWriter.truncated("PaxHeaders.0/" + base, 100), type: .other(UInt8(ascii: "x")))
            xh.size = Int64(data.count)
            xh.mtime = TarTimestamp(seconds: max(0, min(h.mtime.seconds, maxOctal11)))
            append(TarWriter.encodeBlock(xh, name: xh.name, prefix: "", linkName: "", gnuMagic: false))
            append(data)
            appendPadding(data.count)
        }
        append(TarWriter.encodeBlock(h, name: name, prefix: prefix, linkName: linkName, gnuMagic: false))
        bodyRemaining = h.size
        bodyPadding = Int((512 - h.size % 512) % 512)
        if bodyRemaining == 0 { try flushIfNeeded() }
    }

    /// Appends body bytes of the current entry; padding is added once the declared size is reached.
    public mutating func writeContents(_ data: UnsafeRawBufferPointer) throws {
        precondition(Int64(data.count) <= bodyRemaining, "more contents than the header size")
        if data.isEmpty { return }
        bytes.append(contentsOf: data)
        bytesWritten += Int64(data.count)
        bodyRemaining -= Int64(data.count)
        if bodyRemaining == 0 {
            append([UInt8](repeating: 0, count: bodyPadding))
            bodyPadding = 0
        }
        try flushIfNeeded()
    }

    public mutating func writeContents(_ data: [UInt8]) throws {
        try data.withUnsafeBytes { try writeContents($0) }
    }

    /// Writes the two zero end blocks and flushes the sink.
    public mutating func finish() throws {
        precondition(bodyRemaining == 0, "last entry body incomplete")
        if finished { return }
        finished = true
        append([UInt8](repeating: 0, count: 1024))
        try flush()
    }

    // MARK: - Internals

    static func hasBody(_ type: TarEntryType) -> Bool {
        switch type {
        case .regular, .other: return true
        default: return false
        }
    }

    private mutating func append(_ data: [UInt8]) {
        bytes.append(contentsOf: data)
        bytesWritten += Int64(data.count)
    }

    private mutating func appendPadding(_ count: Int) {
        let pad = (512 - count % 512) % 512
        if pad > 0 { append([UInt8](repeating: 0, count: pad)) }
    }

    private mutating func flushIfNeeded() throws {
        if sink != nil, bytes.count >= flushThreshold { try flush() }
    }

    private mutating func flush() throws {
        guard let sink, !bytes.isEmpty else { return }
        try sink(bytes)
        bytes.removeAll(keepingCapacity: true)
    }

    private mutating func emitGNULong(type: UInt8, value: String) throws {
        let data = Array(value.utf8) + [0]
        var lh = TarHeader(name: "././@LongLink", type: .other(type))
        lh.size = Int64(data.count)
        append(TarWriter.encodeBlock(lh, name: lh.name, prefix: "", linkName: "", gnuMagic: true))
        append(data)
        appendPadding(data.count)
    }

    /// Truncates to at most `n` UTF-8 bytes without splitting a scalar.
    static func truncated(_ s: String, _ n: Int) -> String {
        var out = String.UnicodeScalarView()
        var count = 0
        for scalar in s.unicodeScalars {
            let l = UTF8.width(scalar)
            if count + l > n { break }
            out.append(scalar)
            count += l
        }
        return String(out)
    }

    /// Splits a name into ustar (prefix, name), or nil when it does not fit.
    static func splitUstarName(_ full: String) -> (String, String)? {
        let bytes = Array(full.utf8)
        if bytes.count <= 100 { return ("", full) }
        if bytes.count > 256 { return nil }
        var i = min(bytes.count - 1, 155)
        while i > 0 {
            if bytes[i] == UInt8(ascii: "/") {
                let nameLen = bytes.count - i - 1
                if nameLen == 0 || nameLen > 100 { return nil }
                return (String(decoding: bytes[..<i], as: UTF8.self), String(decoding: bytes[(i + 1)...], as: UTF8.self))
            }
            i -= 1
        }
        return nil
    }

    static func formatTime(_ t: TarTimestamp) -> String {
        if t.nanoseconds == 0 { return String(t.seconds) }
        var secs = t.seconds
        var nanos = Int64(t.nanoseconds)
        var sign = ""
        if secs < 0 {
            sign = "-"
            secs = -(secs + 1)
            nanos = 1_000_000_000 - nanos
        }
        var frac = String(nanos)
        frac = String(repeating: "0", count: 9 - frac.count) + frac
        while frac.hasSuffix("0") { frac.removeLast() }
        return "\(sign)\(secs).\(frac)"
    }

    static func paxRecord(_ key: String, _ value: [UInt8]) -> [UInt8] {
        let body = key.utf8.count + value.count + 3  // ' ', '=', '\n'
        var len = body + String(body).count
        if String(len).count != String(body).count { len = body + String(len).count }
        return Array("\(len) \(key)=".utf8) + value + [UInt8(ascii: "\n")]
    }

    static func putString(_ b: inout [UInt8], _ s: String, _ start: Int, _ len: Int) {
        for (i, c) in s.utf8.prefix(len).enumerated() { b[start + i] = c }
    }

    /// Octal with NUL terminator when it fits, else base-256.
    static func putNumeric(_ b: inout [UInt8], _ value: Int64, _ start: Int, _ len: Int) {
        let digits = len - 1
        let maxOctal: Int64 = (1 << (3 * Int64(digits))) - 1
        if value >= 0 && value <= maxOctal {
            var v = value
            for i in stride(from: digits - 1, through: 0, by: -1) {
                b[start + i] = UInt8(ascii: "0") + UInt8(v & 7)
                v >>= 3
            }
            b[start + digits] = 0
        } else {
            var v = value
            for i in stride(from: len - 1, through: 0, by: -1) {
                b[start + i] = UInt8(truncatingIfNeeded: v)
                v >>= 8
            }
            b[start] |= 0x80
        }
    }

    static func encodeBlock(_ h: TarHeader, name: String, prefix: String, linkName: String, gnuMagic: Bool) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 512)
        putString(&b, name, 0, 100)
        putNumeric(&b, Int64(h.mode & 0o7777), 100, 8)
        putNumeric(&b, Int64(max(0, min(h.uid, 0o7777777))), 108, 8)
        putNumeric(&b, Int64(max(0, min(h.gid, 0o7777777))), 116, 8)
        putNumeric(&b, h.size, 124, 12)
        putNumeric(&b, max(0, min(h.mtime.seconds, 0o77777777777)), 136, 12)
        b[156] = h.type.flag
        putString(&b, linkName, 157, 100)
        if gnuMagic {
            putString(&b, "ustar  ", 257, 8)
        } else {
            putString(&b, "ustar", 257, 6)
            b[263] = UInt8(ascii: "0")
            b[264] = UInt8(ascii: "0")
        }
        putString(&b, h.uname, 265, 32)
        putString(&b, h.gname, 297, 32)
        putNumeric(&b, Int64(min(h.devMajor, 0o7777777)), 329, 8)
        putNumeric(&b, Int64(min(h.devMinor, 0o7777777)), 337, 8)
        if !gnuMagic { putString(&b, prefix, 345, 155) }
        for i in 148..<156 { b[i] = UInt8(ascii: " ") }
        var sum = 0
        for v in b { sum += Int(v) }
        var v = sum
        for i in stride(from: 5, through: 0, by: -1) {
            b[148 + i] = UInt8(ascii: "0") + UInt8(v & 7)
            v >>= 3
        }
        b[154] = 0
        b[155] = UInt8(ascii: " ")
        return b
    }
}
