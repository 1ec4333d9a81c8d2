/// The type of a tar entry (the `typeflag` field).
public enum TarEntryType: Sendable, Equatable, Hashable {
    case regular
    case hardLink
    case symbolicLink
    case characterDevice
    case blockDevice
    case directory
    case fifo
    /// Any other (unsupported) type flag, e.g. GNU sparse `S` or volume label `V`.
    case other(UInt8)

    public init(flag: UInt8) {
        switch flag {
        case 0, UInt8(ascii: "0"), UInt8(ascii: "7"): self = .regular
        case UInt8(ascii: "1"): self = .hardLink
        case UInt8(ascii: "2"): self = .symbolicLink
        case UInt8(ascii: "3"): self = .characterDevice
        case UInt8(ascii: "4"): self = .blockDevice
        case UInt8(ascii: "5"): self = .directory
        case UInt8(ascii: "6"): self = .fifo
        default: self = .other(flag)
        }
    }

    public var flag: UInt8 {
        switch self {
        case .regular: return UInt8(ascii: "0")
        case .hardLink: return UInt8(ascii: "1")
        case .symbolicLink: return UInt8(ascii: "2")
        case .characterDevice: return UInt8(ascii: "3")
        case .blockDevice: return UInt8(ascii: "4")
        case .directory: return UInt8(ascii: "5")
        case .fifo: return UInt8(ascii: "6")
        case .other(let f): return f
        }
    }
}

/// A point in time with nanosecond precision (PAX `mtime` may carry fractions).
public struct TarTimestamp: Sendable, Equatable, Hashable {
    public var seconds: Int64
    public var nanoseconds: Int32
    public init(seconds: Int64, nanoseconds: Int32 = 0) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }
}

/// A fully resolved tar entry header (ustar fields merged with PAX / GNU long name records).
public struct TarHeader: Sendable, Equatable {
    public var name: String
    public var type: TarEntryType
    /// Permission bits including setuid/setgid/sticky (no file-type bits).
    public var mode: UInt32
    public var uid: Int
    public var gid: Int
    public var uname: String
    public var gname: String
    /// Size of the entry body in bytes (only regular files have bodies when writing).
    public var size: Int64
    public var mtime: TarTimestamp
    /// Target of a symlink or hard link.
    public var linkName: String
    public var devMajor: UInt32
    public var devMinor: UInt32
    /// Extended attributes from `SCHILY.xattr.*` PAX records.
    public var xattrs: [String: [UInt8]]

    public init(
        name: String, type: TarEntryType, mode: UInt32 = 0o644, uid: Int = 0, gid: Int = 0,
        uname: String = "", gname: String = "", size: Int64 = 0,
        mtime: TarTimestamp = TarTimestamp(seconds: 0), linkName: String = "",
        devMajor: UInt32 = 0, devMinor: UInt32 = 0, xattrs: [String: [UInt8]] = [:]
    ) {
        self.name = name
        self.type = type
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.uname = uname
        self.gname = gname
        self.size = size
        self.mtime = mtime
        self.linkName = linkName
        self.devMajor = devMajor
        self.devMinor = devMinor
        self.xattrs = xattrs
    }
}
