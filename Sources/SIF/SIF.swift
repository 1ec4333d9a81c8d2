// The SIF (Singularity Image Format) container format: see SIFFile (reader) and SIFBuilder (writer).
//
// On-disk layout (sylabs/sif `pkg/sif`, format version "01"), everything little-endian and packed:
//
//     0 ..< 128                     global header (SIFHeader)
//     128 ..< descriptorsOffset     zero
//     descriptorsOffset ..< +N*585  descriptor table, N = descriptorsTotal slots (default 48 at 4096)
//     dataOffset ...                data objects; partitions are 4096-aligned, other objects packed

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors thrown by the SIF reader and writer.
public enum SIFError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The file does not start with a SIF header (no `SIF_MAGIC` at offset 32).
    case notSIF(path: String)
    /// The file ends before something its header or descriptor table says is there.
    case truncated(path: String, what: String)
    /// The header's version field is not "01".
    case unsupportedVersion(String)
    /// The image holds no partition of type `.primarySystem`.
    case noPrimaryPartition(path: String)
    /// A system call failed.
    case io(path: String, operation: String, errno: Int32)
    /// Malformed header/descriptor contents, or invalid input to the builder.
    case invalid(String)

    public var description: String {
        switch self {
        case .notSIF(let path):
            return "\(path): not a SIF image (no SIF_MAGIC in the header)"
        case .truncated(let path, let what):
            return "\(path): SIF image is truncated: \(what)"
        case .unsupportedVersion(let version):
            return "unsupported SIF version \"\(version)\" (only \"\(SIFLayout.version)\" is supported)"
        case .noPrimaryPartition(let path):
            return "\(path): SIF image has no primary system partition"
        case .io(let path, let operation, let code):
            return "\(path): \(operation) failed: \(String(cString: strerror(code))) (errno \(code))"
        case .invalid(let message):
            return "invalid SIF: \(message)"
        }
    }
}

/// Fixed sizes and offsets of the SIF format.
public enum SIFLayout {
    public static let headerSize = 128
    public static let launchScriptLength = 32
    public static let magic: [UInt8] = Array("SIF_MAGIC".utf8) + [0]  // 10 bytes at offset 32
    public static let version = "01"
    public static let descriptorSize = 585
    public static let nameLength = 128
    public static let extraLength = 384
    /// Stored group IDs (and linked group IDs) are ORed with this mask.
    public static let groupMask: UInt32 = 0xF000_0000
    public static let defaultDescriptorsOffset: Int64 = 4096
    public static let defaultDescriptorCapacity = 48
    public static let partitionAlignment: Int64 = 4096
    /// Upper bound on `descriptorsTotal` accepted by the reader and the builder (the reference allows
    /// up to 2^32-1; real images use 48).
    public static let maxDescriptors = 65_536
    /// The launch script Apptainer writes.
    public static let defaultLaunchScript = "#!/usr/bin/env run-singularity\n"
}

public enum SIFDataType: Int32, Sendable, CaseIterable, CustomStringConvertible {
    case definitionFile = 0x4001, environment, labels, partition, signature, genericJSON, generic, cryptoMessage, sbom,
        ociRootIndex, ociBlob

    /// The name `siftool list` prints for the type.
    public var description: String {
        switch self {
        case .definitionFile: "Def.FILE"
        case .environment: "Env.Vars"
        case .labels: "JSON.Labels"
        case .partition: "FS"
        case .signature: "Signature"
        case .genericJSON: "JSON.Generic"
        case .generic: "Generic/Raw"
        case .cryptoMessage: "Cryptographic Message"
        case .sbom: "SBOM"
        case .ociRootIndex: "OCI.RootIndex"
        case .ociBlob: "OCI.Blob"
        }
    }
}

public enum SIFFilesystem: Int32, Sendable, CaseIterable {
    case squashfs = 1, ext3, immutableObject, raw, encryptedSquashfs
}

public enum SIFPartitionType: Int32, Sendable, CaseIterable {
    case system = 1, primarySystem, data, overlay
}

/// A SIF architecture code: two ASCII digits ("02" = amd64), stored as 3 bytes with a NUL.
public struct SIFArch: Sendable, Hashable, CustomStringConvertible {
    public let code: String

    static let table: [(code: String, goArch: String)] = [
        ("01", "386"), ("02", "amd64"), ("03", "arm"), ("04", "arm64"), ("05", "ppc64"), ("06", "ppc64le"),
        ("07", "mips"), ("08", "mipsle"), ("09", "mips64"), ("10", "mips64le"), ("11", "s390x"), ("12", "riscv64"),
        ("13", "loong64"),
    ]

    /// An arch from its raw two-digit code, as stored in the file.
    public init(code: String) { self.code = code }

    /// An arch from a Go `GOARCH` name ("amd64" → "02"); unknown names give "00".
    public init(goArch: String) {
        code = Self.table.first { $0.goArch == goArch }?.code ?? "00"
    }

    public static let unknown = SIFArch(code: "00")
    public static let amd64 = SIFArch(code: "02")
    public static let arm64 = SIFArch(code: "04")

    /// The arch of the machine this code runs on (`.unknown` if it has no SIF code).
    public static var host: SIFArch {
        #if arch(x86_64)
        return .amd64
        #elseif arch(arm64)
        return .arm64
        #elseif arch(i386)
        return SIFArch(goArch: "386")
        #elseif arch(arm)
        return SIFArch(goArch: "arm")
        #elseif arch(powerpc64le)
        return SIFArch(goArch: "ppc64le")
        #elseif arch(s390x)
        return SIFArch(goArch: "s390x")
        #elseif arch(riscv64)
        return SIFArch(goArch: "riscv64")
        #else
        return .unknown
        #endif
    }

    /// The Go `GOARCH` name, or "unknown" (as `siftool` prints it).
    public var goArch: String {
        Self.table.first { $0.code == code }?.goArch ?? "unknown"
    }

    public var description: String {
        let name = goArch
        return name == "unknown" ? "unknown (\(code))" : name
    }

    /// The 3 on-disk bytes: two ASCII characters and a NUL.
    var bytes: [UInt8] {
        var b = Array(code.utf8.prefix(2))
        while b.count < 3 { b.append(0) }
        return b
    }

    init(bytes: ArraySlice<UInt8>) {
        code = decodeCString(bytes)
    }
}

/// Partition metadata (the descriptor's Extra field: fstype int32, parttype int32, arch [3]byte).
public struct SIFPartitionInfo: Sendable, Equatable {
    public var filesystem: SIFFilesystem
    public var type: SIFPartitionType
    public var arch: SIFArch

    public init(filesystem: SIFFilesystem = .squashfs, type: SIFPartitionType = .primarySystem, arch: SIFArch) {
        self.filesystem = filesystem
        self.type = type
        self.arch = arch
    }
}

/// One used slot of the descriptor table.
public struct SIFDescriptor: Sendable, Equatable {
    public var dataType: SIFDataType
    /// Object ID (slot index + 1 in files written by the reference implementation).
    public var id: UInt32
    /// Group ID without the 0xF0000000 mask; 0 means "no group".
    public var groupID: UInt32
    /// Linked object ID, or linked group ID if `linkedIsGroup`; 0 means "not linked".
    public var linkedID: UInt32
    public var linkedIsGroup: Bool
    /// Absolute file offset of the object's first byte.
    public var offset: Int64
    public var size: Int64
    /// `size` plus the alignment gap in front of the object.
    public var sizeWithPadding: Int64
    public var createdAt: Int64
    public var modifiedAt: Int64
    public var name: String
    /// Set for `.partition` objects whose filesystem and partition type are known.
    public var partition: SIFPartitionInfo?
    /// The raw 384-byte type-specific Extra field.
    public var extra: [UInt8]
    /// Index of the slot in the descriptor table.
    public var slot: Int

    /// For `.ociRootIndex` / `.ociBlob` objects: the digest stored in Extra ("sha256:…").
    public var ociDigest: String? {
        guard dataType == .ociRootIndex || dataType == .ociBlob else { return nil }
        let s = decodeCString(extra[...])
        return s.isEmpty ? nil : s
    }
}

/// The 128-byte global header.
public struct SIFHeader: Sendable, Equatable {
    public var launchScript: String
    public var version: String
    public var arch: SIFArch
    /// 16 raw UUID bytes.
    public var id: [UInt8]
    public var createdAt: Int64
    public var modifiedAt: Int64
    public var descriptorsFree: Int64
    public var descriptorsTotal: Int64
    public var descriptorsOffset: Int64
    public var descriptorsSize: Int64
    public var dataOffset: Int64
    public var dataSize: Int64

    /// The ID in the usual lowercase 8-4-4-4-12 form, as `siftool header` prints it.
    public var idString: String {
        let hex = id.map { byte -> String in
            let s = String(byte, radix: 16)
            return s.count == 1 ? "0" + s : s
        }
        var out = ""
        for (i, h) in hex.enumerated() {
            if i == 4 || i == 6 || i == 8 || i == 10 { out += "-" }
            out += h
        }
        return out
    }
}

// MARK: - Little-endian helpers

@inline(__always)
func readLE<T: FixedWidthInteger>(_ bytes: [UInt8], _ offset: Int, as: T.Type = T.self) -> T {
    var value: T = 0
    for i in (0..<MemoryLayout<T>.size).reversed() {
        value = (value << 8) | T(truncatingIfNeeded: bytes[offset + i])
    }
    return value
}

@inline(__always)
func writeLE<T: FixedWidthInteger>(_ value: T, into bytes: inout [UInt8], at offset: Int) {
    var v = value
    for i in 0..<MemoryLayout<T>.size {
        bytes[offset + i] = UInt8(truncatingIfNeeded: v)
        v = v >> 8
    }
}

/// Decodes bytes up to the first NUL as UTF-8.
func decodeCString(_ bytes: ArraySlice<UInt8>) -> String {
    let end = bytes.firstIndex(of: 0) ?? bytes.endIndex
    return String(decoding: bytes[bytes.startIndex..<end], as: UTF8.self)
}

func roundUp(_ value: Int64, to alignment: Int64) -> Int64 {
    guard alignment > 0, value % alignment != 0 else { return value }
    return value + alignment - value % alignment
}
