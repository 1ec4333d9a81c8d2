import Foundation

/// Name of the TOC tar entry, the last entry of an eStargz blob.
public let estargzTOCName = "stargz.index.json"
/// Landmark written when no files are prioritized (no prefetch).
public let noPrefetchLandmarkName = ".no.prefetch.landmark"
/// Landmark written right after the prioritized files.
public let prefetchLandmarkName = ".prefetch.landmark"
/// Size of the eStargz footer.
public let estargzFooterSize = 51
/// Size of the legacy stargz (google/crfs) footer: no `SG` subfield header inside the gzip Extra field.
public let legacyStargzFooterSize = 47
/// Layer annotation carrying the uncompressed size of the blob.
public let uncompressedSizeAnnotation = "io.containers.estargz.uncompressed-size"

/// One entry of `stargz.index.json` (the reference `TOCEntry`); JSON keys as the reference writes them.
public struct TOCEntry: Sendable, Equatable, Codable {
    public var name: String
    /// `dir`, `reg`, `symlink`, `hardlink`, `char`, `block`, `fifo` or `chunk`.
    public var type: String
    public var size: Int64 = 0
    /// RFC 3339 UTC, seconds precision; empty when unknown / Unix time 0.
    public var modtime: String = ""
    public var linkName: String = ""
    public var mode: Int64 = 0
    public var uid: Int = 0
    public var gid: Int = 0
    public var userName: String = ""
    public var groupName: String = ""
    /// Compressed offset of the gzip member holding this payload (reg/chunk).
    public var offset: Int64 = 0
    /// Uncompressed offset inside that member (min-chunk-size mode; 0 here).
    public var innerOffset: Int64 = 0
    public var devMajor: Int = 0
    public var devMinor: Int = 0
    /// Extended attributes (base64 strings in JSON).
    public var xattrs: [String: [UInt8]] = [:]
    /// `sha256:<hex>` of the whole file (on `reg`).
    public var digest: String = ""
    public var chunkOffset: Int64 = 0
    /// 0 for the last chunk and for an unchunked file (readers fill it in).
    public var chunkSize: Int64 = 0
    public var chunkDigest: String = ""

    public init(name: String, type: String) {
        self.name = name
        self.type = type
    }

    enum CodingKeys: String, CodingKey {
        case name, type, size, modtime, linkName, mode, uid, gid, userName, groupName, offset, innerOffset
        case devMajor, devMinor, xattrs, digest, chunkOffset, chunkSize, chunkDigest
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        type = try c.decode(String.self, forKey: .type)
        size = try c.decodeIfPresent(Int64.self, forKey: .size) ?? 0
        modtime = try c.decodeIfPresent(String.self, forKey: .modtime) ?? ""
        linkName = try c.decodeIfPresent(String.self, forKey: .linkName) ?? ""
        mode = try c.decodeIfPresent(Int64.self, forKey: .mode) ?? 0
        uid = try c.decodeIfPresent(Int.self, forKey: .uid) ?? 0
        gid = try c.decodeIfPresent(Int.self, forKey: .gid) ?? 0
        userName = try c.decodeIfPresent(String.self, forKey: .userName) ?? ""
        groupName = try c.decodeIfPresent(String.self, forKey: .groupName) ?? ""
        offset = try c.decodeIfPresent(Int64.self, forKey: .offset) ?? 0
        innerOffset = try c.decodeIfPresent(Int64.self, forKey: .innerOffset) ?? 0
        devMajor = try c.decodeIfPresent(Int.self, forKey: .devMajor) ?? 0
        devMinor = try c.decodeIfPresent(Int.self, forKey: .devMinor) ?? 0
        let x = try c.decodeIfPresent([String: String].self, forKey: .xattrs) ?? [:]
        var xattrs: [String: [UInt8]] = [:]
        for (k, v) in x {
            guard let d = Data(base64Encoded: v) else {
                throw EStargzError.invalidTOC("xattr \(k) of \(name) is not base64")
            }
            xattrs[k] = Array(d)
        }
        self.xattrs = xattrs
        digest = try c.decodeIfPresent(String.self, forKey: .digest) ?? ""
        chunkOffset = try c.decodeIfPresent(Int64.self, forKey: .chunkOffset) ?? 0
        chunkSize = try c.decodeIfPresent(Int64.self, forKey: .chunkSize) ?? 0
        chunkDigest = try c.decodeIfPresent(String.self, forKey: .chunkDigest) ?? ""
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(type, forKey: .type)
        if size != 0 { try c.encode(size, forKey: .size) }
        if !modtime.isEmpty { try c.encode(modtime, forKey: .modtime) }
        if !linkName.isEmpty { try c.encode(linkName, forKey: .linkName) }
        if mode != 0 { try c.encode(mode, forKey: .mode) }
        if uid != 0 { try c.encode(uid, forKey: .uid) }
        if gid != 0 { try c.encode(gid, forKey: .gid) }
        if !userName.isEmpty { try c.encode(userName, forKey: .userName) }
        if !groupName.isEmpty { try c.encode(groupName, forKey: .groupName) }
        if offset != 0 { try c.encode(offset, forKey: .offset) }
        if innerOffset != 0 { try c.encode(innerOffset, forKey: .innerOffset) }
        if devMajor != 0 { try c.encode(devMajor, forKey: .devMajor) }
        if devMinor != 0 { try c.encode(devMinor, forKey: .devMinor) }
        if !xattrs.isEmpty {
            try c.encode(xattrs.mapValues { Data($0).base64EncodedString() }, forKey: .xattrs)
        }
        if !digest.isEmpty { try c.encode(digest, forKey: .digest) }
        if chunkOffset != 0 { try c.encode(chunkOffset, forKey: .chunkOffset) }
        if chunkSize != 0 { try c.encode(chunkSize, forKey: .chunkSize) }
        if !chunkDigest.isEmpty { try c.encode(chunkDigest, forKey: .chunkDigest) }
    }
}

/// The whole `stargz.index.json` document.
public struct TOC: Sendable, Equatable, Codable {
    public var version: Int
    public var entries: [TOCEntry]

    public init(version: Int = 1, entries: [TOCEntry]) {
        self.version = version
        self.entries = entries
    }

    /// JSON bytes in the reference layout: fields in the reference's struct order, omitempty, tab indentation
    /// (`json.MarshalIndent(toc, "", "\t")`), Go's HTML-safe string escaping.
    public func jsonBytes() -> [UInt8] {
        var o = JSONOut()
        o.raw("{\n\t\"version\": \(version),\n\t\"entries\": [")
        for (i, e) in entries.enumerated() {
            o.raw(i == 0 ? "\n\t\t{" : ",\n\t\t{")
            var first = true
            func key(_ k: String) {
                o.raw(first ? "\n\t\t\t" : ",\n\t\t\t")
                first = false
                o.string(k)
                o.raw(": ")
            }
            func str(_ k: String, _ v: String, always: Bool = false) {
                if v.isEmpty && !always { return }
                key(k)
                o.string(v)
            }
            func int(_ k: String, _ v: Int64) {
                if v == 0 { return }
                key(k)
                o.raw(String(v))
            }
            str("name", e.name, always: true)
            str("type", e.type, always: true)
            int("size", e.size)
            str("modtime", e.modtime)
            str("linkName", e.linkName)
            int("mode", e.mode)
            int("uid", Int64(e.uid))
            int("gid", Int64(e.gid))
            str("userName", e.userName)
            str("groupName", e.groupName)
            int("offset", e.offset)
            int("innerOffset", e.innerOffset)
            int("devMajor", Int64(e.devMajor))
            int("devMinor", Int64(e.devMinor))
            if !e.xattrs.isEmpty {
                key("xattrs")
                o.raw("{")
                for (j, k) in e.xattrs.keys.sorted().enumerated() {
                    o.raw(j == 0 ? "\n\t\t\t\t" : ",\n\t\t\t\t")
                    o.string(k)
                    o.raw(": ")
                    o.string(Data(e.xattrs[k]!).base64EncodedString())
                }
                o.raw("\n\t\t\t}")
            }
            str("digest", e.digest)
            int("chunkOffset", e.chunkOffset)
            int("chunkSize", e.chunkSize)
            str("chunkDigest", e.chunkDigest)
            o.raw("\n\t\t}")
        }
        o.raw(entries.isEmpty ? "]\n}" : "\n\t]\n}")
        return o.bytes
    }
}

struct JSONOut {
    var bytes: [UInt8] = []

    mutating func raw(_ s: String) { bytes.append(contentsOf: s.utf8) }

    mutating func string(_ s: String) {
        let hex = Array("0123456789abcdef".utf8)
        bytes.append(UInt8(ascii: "\""))
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": raw("\\\"")
            case "\\": raw("\\\\")
            case "\n": raw("\\n")
            case "\r": raw("\\r")
            case "\t": raw("\\t")
            case "<", ">", "&", "\u{2028}", "\u{2029}":
                let v = scalar.value
                raw("\\u")
                for shift in stride(from: 12, through: 0, by: -4) { bytes.append(hex[Int((v >> UInt32(shift)) & 0xf)]) }
            default:
                if scalar.value < 0x20 {
                    raw("\\u00")
                    bytes.append(hex[Int(scalar.value >> 4)])
                    bytes.append(hex[Int(scalar.value & 0xf)])
                } else {
                    bytes.append(contentsOf: String(scalar).utf8)
                }
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

/// Errors of the eStargz writer and reader.
///
/// `EStargzReader` wraps every error it throws in `.layer(name, error)` when it was given a layer name (usually the
/// blob digest), so a failure among dozens of layers says which one; `underlying` strips that wrapper.
public indirect enum EStargzError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidFooter(String)
    case invalidTOC(String)
    case tocDigestMismatch(expected: String, actual: String)
    case chunkDigestMismatch(name: String, offset: Int64, expected: String, actual: String)
    case notFound(String)
    case corruptGzip(String)
    case invalidInput(String)
    /// A read of `expected` bytes at `offset` returned `got` bytes: the blob is shorter than its size says.
    case truncated(offset: Int64, expected: Int, got: Int)
    /// The TOC (compressed region or uncompressed tar) is larger than the reader's limit.
    case tocTooLarge(limit: Int, detail: String)
    /// A TOC entry whose name (or hard link target) `path` has a `..` component or a NUL byte.
    case unsafeEntryName(entry: String, path: String)
    /// `error`, raised while reading layer `layer` (usually its digest).
    case layer(String, EStargzError)

    public var description: String {
        switch self {
        case .invalidFooter(let d): return "invalid eStargz footer: \(d)"
        case .invalidTOC(let d): return "invalid eStargz TOC: \(d)"
        case .tocDigestMismatch(let e, let a):
            return "eStargz TOC digest mismatch: the layer annotation says \(e), the TOC in the blob is \(a)"
        case .chunkDigestMismatch(let n, let o, let e, let a):
            return "eStargz chunk of \(n) at offset \(o): digest mismatch, expected \(e), got \(a)"
        case .notFound(let d): return "eStargz: \(d) not found"
        case .corruptGzip(let d): return "eStargz: corrupt gzip data: \(d)"
        case .invalidInput(let d): return "eStargz: invalid input layer: \(d)"
        case .truncated(let o, let e, let g):
            if g < e {
                return "eStargz blob truncated: wanted \(e) bytes at offset \(o), got \(g) "
                    + "(the blob is shorter than its descriptor says, or the download was cut short)"
            }
            return "eStargz blob read of \(e) bytes at offset \(o) returned \(g) bytes"
        case .tocTooLarge(let limit, let d):
            return "eStargz TOC too large: \(d); the limit is \(limit) bytes uncompressed"
        case .unsafeEntryName(let entry, let path):
            // String(reflecting:) quotes and escapes, so a NUL or control character shows up in the message.
            let what = entry == path ? "name" : "hard link target \(String(reflecting: path))"
            return "unsafe eStargz TOC entry \(String(reflecting: entry)): its \(what) has a \"..\" component or a NUL byte; "
                + "refusing the layer (a lazily mounted filesystem must never serve such a path)"
        case .layer(let l, let e): return "layer \(l): \(e.description)"
        }
    }

    /// The error without its `.layer` wrapper.
    public var underlying: EStargzError {
        if case .layer(_, let e) = self { return e.underlying }
        return self
    }

    /// The layer named by the `.layer` wrapper, if any.
    public var layerName: String? {
        if case .layer(let l, _) = self { return l }
        return nil
    }

    /// Wrapped in `.layer(layer, _)` (once), or unchanged when `layer` is nil.
    public func inLayer(_ layer: String?) -> EStargzError {
        guard let layer, layerName == nil else { return self }
        return .layer(layer, self)
    }
}
