import Foundation

/// Parses `stargz.index.json` straight into `TOC`. A layer's TOC can hold tens of thousands of entries, and
/// decoding it through `JSONDecoder` was most of the time a lazy mount took to start (perf: generic metadata and
/// keyed-container lookups per field). The format is fixed and flat, so a dedicated parser does one pass with no
/// intermediate tree. Unknown keys are skipped, whatever their value, as JSON decoding would.
struct TOCParser {
    private let bytes: [UInt8]
    private var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    static func parse(_ bytes: [UInt8]) throws -> TOC {
        var parser = TOCParser(bytes)
        let toc = try parser.document()
        parser.skipWhitespace()
        guard parser.position == bytes.count else { throw parser.failure("data after the JSON value") }
        return toc
    }

    private mutating func document() throws -> TOC {
        var version: Int?
        var entries: [TOCEntry] = []
        try object { parser, key in
            switch key {
            case "version": version = Int(try parser.integer())
            case "entries":
                try parser.array { parser in entries.append(try parser.entry()) }
            default: try parser.skipValue()
            }
        }
        guard let version else { throw failure("no version") }
        return TOC(version: version, entries: entries)
    }

    private mutating func entry() throws -> TOCEntry {
        var e = TOCEntry(name: "", type: "")
        var hasName = false, hasType = false
        try object { p, key in
            // A null member means "absent", as with JSONDecoder's decodeIfPresent.
            if key != "name", key != "type", try p.null() { return }
            switch key {
            case "name": e.name = try p.string(); hasName = true
            case "type": e.type = try p.string(); hasType = true
            case "size": e.size = try p.integer()
            case "modtime": e.modtime = try p.string()
            case "linkName": e.linkName = try p.string()
            case "mode": e.mode = try p.integer()
            case "uid": e.uid = Int(try p.integer())
            case "gid": e.gid = Int(try p.integer())
            case "userName": e.userName = try p.string()
            case "groupName": e.groupName = try p.string()
            case "offset": e.offset = try p.integer()
            case "innerOffset": e.innerOffset = try p.integer()
            case "devMajor": e.devMajor = Int(try p.integer())
            case "devMinor": e.devMinor = Int(try p.integer())
            case "digest": e.digest = try p.string()
            case "chunkOffset": e.chunkOffset = try p.integer()
            case "chunkSize": e.chunkSize = try p.integer()
            case "chunkDigest": e.chunkDigest = try p.string()
            case "xattrs":
                try p.object { p, name in
                    let value = try p.string()
                    guard let data = Data(base64Encoded: value) else {
                        throw EStargzError.invalidTOC("xattr \(name) of \(e.name) is not base64")
                    }
                    e.xattrs[name] = Array(data)
                }
            default: try p.skipValue()
            }
        }
        guard hasName, hasType else { throw failure("an entry without name or type") }
        return e
    }

    // MARK: - JSON

    private func failure(_ what: String) -> EStargzError {
        .invalidTOC("\(estargzTOCName) is not valid TOC JSON: \(what) at byte \(position)")
    }

    private mutating func skipWhitespace() {
        while position < bytes.count, bytes[position] == 0x20 || bytes[position] == 0x0a || bytes[position] == 0x0d || bytes[position] == 0x09 {
            position += 1
        }
    }

    private mutating func expect(_ byte: UInt8) throws {
        skipWhitespace()
        guard position < bytes.count, bytes[position] == byte else { throw failure("expected '\(UnicodeScalar(byte))'") }
        position += 1
    }

    private mutating func peek() throws -> UInt8 {
        skipWhitespace()
        guard position < bytes.count else { throw failure("unexpected end") }
        return bytes[position]
    }

    /// Calls `member` for each key; `member` must consume the value.
    private mutating func object(_ member: (inout TOCParser, String) throws -> Void) throws {
        try expect(UInt8(ascii: "{"))
        if try peek() == UInt8(ascii: "}") {
            position += 1
            return
        }
        while true {
            let key = try string()
            try expect(UInt8(ascii: ":"))
            try member(&self, key)
            let next = try peek()
            position += 1
            if next == UInt8(ascii: "}") { return }
            guard next == UInt8(ascii: ",") else { throw failure("expected ',' or '}'") }
        }
    }

    private mutating func array(_ element: (inout TOCParser) throws -> Void) throws {
        try expect(UInt8(ascii: "["))
        if try peek() == UInt8(ascii: "]") {
            position += 1
            return
        }
        while true {
            try element(&self)
            let next = try peek()
            position += 1
            if next == UInt8(ascii: "]") { return }
            guard next == UInt8(ascii: ",") else { throw failure("expected ',' or ']'") }
        }
    }

    /// Consumes `null` if it is next.
    private mutating func null() throws -> Bool {
        guard try peek() == UInt8(ascii: "n") else { return false }
        try literal("null")
        return true
    }

    private mutating func literal(_ word: String) throws {
        let expected = Array(word.utf8)
        guard position + expected.count <= bytes.count, bytes[position..<(position + expected.count)].elementsEqual(expected) else {
            throw failure("expected \(word)")
        }
        position += expected.count
    }

    private mutating func integer() throws -> Int64 {
        _ = try peek()
        var negative = false
        if bytes[position] == UInt8(ascii: "-") {
            negative = true
            position += 1
        }
        var value: Int64 = 0
        var digits = 0
        while position < bytes.count, bytes[position] >= 0x30, bytes[position] <= 0x39 {
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times.addingReportingOverflow(Int64(bytes[position] - 0x30))
            guard !overflow1, !overflow2 else { throw failure("integer out of range") }
            value = sum
            digits += 1
            position += 1
        }
        guard digits > 0 else { throw failure("expected an integer") }
        if position < bytes.count, bytes[position] == UInt8(ascii: ".") || bytes[position] | 0x20 == UInt8(ascii: "e") {
            throw failure("expected an integer, found a fraction or exponent")
        }
        return negative ? -value : value
    }

    private mutating func string() throws -> String {
        try expect(UInt8(ascii: "\""))
        let start = position
        // Fast path: no escapes.
        while position < bytes.count, bytes[position] != UInt8(ascii: "\""), bytes[position] != UInt8(ascii: "\\") {
            guard bytes[position] >= 0x20 else { throw failure("control character in a string") }
            position += 1
        }
        guard position < bytes.count else { throw failure("unterminated string") }
        var result = [UInt8](bytes[start..<position])
        while bytes[position] != UInt8(ascii: "\"") {
            // An escape.
            position += 1
            guard position < bytes.count else { throw failure("unterminated string") }
            let escape = bytes[position]
            position += 1
            switch escape {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): result.append(escape)
            case UInt8(ascii: "b"): result.append(0x08)
            case UInt8(ascii: "f"): result.append(0x0c)
            case UInt8(ascii: "n"): result.append(0x0a)
            case UInt8(ascii: "r"): result.append(0x0d)
            case UInt8(ascii: "t"): result.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if (0xD800..<0xDC00).contains(scalar) {
                    // A surrogate pair, or a lone high surrogate (replaced, as JSONDecoder would reject; Go emits U+FFFD).
                    if position + 1 < bytes.count, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") {
                        position += 2
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw failure("invalid surrogate pair") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else {
                        throw failure("lone surrogate")
                    }
                } else if (0xDC00..<0xE000).contains(scalar) {
                    throw failure("lone surrogate")
                }
                guard let unicode = Unicode.Scalar(scalar) else { throw failure("invalid escape") }
                result.append(contentsOf: Array(String(Character(unicode)).utf8))
            default: throw failure("invalid escape")
            }
            while position < bytes.count, bytes[position] != UInt8(ascii: "\""), bytes[position] != UInt8(ascii: "\\") {
                guard bytes[position] >= 0x20 else { throw failure("control character in a string") }
                result.append(bytes[position])
                position += 1
            }
            guard position < bytes.count else { throw failure("unterminated string") }
        }
        position += 1
        guard let text = String(validating: result, as: UTF8.self) else { throw failure("invalid UTF-8 in a string") }
        return text
    }

    private mutating func hex4() throws -> UInt32 {
        guard position + 4 <= bytes.count else { throw failure("short \\u escape") }
        var value: UInt32 = 0
        for byte in bytes[position..<(position + 4)] {
            let digit: UInt32
            switch byte {
            case 0x30...0x39: digit = UInt32(byte - 0x30)
            case 0x41...0x46: digit = UInt32(byte - 0x41 + 10)
            case 0x61...0x66: digit = UInt32(byte - 0x61 + 10)
            default: throw failure("bad \\u escape")
            }
            value = value << 4 | digit
        }
        position += 4
        return value
    }

    /// Skips any JSON value.
    private mutating func skipValue(depth: Int = 0) throws {
        guard depth < 64 else { throw failure("nesting too deep") }
        switch try peek() {
        case UInt8(ascii: "\""): _ = try string()
        case UInt8(ascii: "{"): try object { p, _ in try p.skipValue(depth: depth + 1) }
        case UInt8(ascii: "["): try array { p in try p.skipValue(depth: depth + 1) }
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        default:
            // A number, possibly with a fraction or an exponent.
            let start = position
            while position < bytes.count, "+-.0123456789eE".utf8.contains(bytes[position]) { position += 1 }
            guard position > start else { throw failure("unexpected character") }
        }
    }
}
