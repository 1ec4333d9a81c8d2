#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads a SIF file's header and descriptor table (reads only the first 32 KiB-ish; never the whole file).
public struct SIFFile: Sendable {
    public let path: String
    public let header: SIFHeader
    /// Used slots only, in table order. Slots with a data type this code does not know are left out
    /// (their bounds are still checked).
    public let descriptors: [SIFDescriptor]
    /// Size of the file when it was opened.
    public let fileSize: Int64

    /// Opens and validates `path`: magic "SIF_MAGIC", version "01", descriptor table inside the file,
    /// every used object inside the file.
    public init(path: String) throws(SIFError) {
        let file = try RawFile(path: path, flags: O_RDONLY)
        let fileSize = try file.size()
        let head = try file.read(count: SIFLayout.headerSize, at: 0)
        let header = try Self.parseHeader(head, path: path)
        let tableEnd = try Self.checkTable(header, path: path, fileSize: fileSize)
        // The table only: the gap before it is the file's to choose (up to 2 GiB) and is not read into memory.
        let tableSize = Int(tableEnd - header.descriptorsOffset)
        let table = try file.read(count: tableSize, at: header.descriptorsOffset)
        guard table.count == tableSize else {
            throw .truncated(path: path, what: "descriptor table: \(table.count) of \(tableSize) bytes")
        }
        try self.init(path: path, header: header, table: table, fileSize: fileSize)
    }

    /// Parses a SIF from its first bytes, e.g. fetched with an HTTP Range request: `prefix` must hold the
    /// header and the whole descriptor table (the first 32,176 bytes of a default image); `fileSize` is the
    /// size of the whole file, used to check the objects' bounds. `read(_:)` works only if `path` is a
    /// local copy of the file.
    public init(path: String, prefix: [UInt8], fileSize: Int64) throws(SIFError) {
        let header = try Self.parseHeader(prefix, path: path)
        let tableEnd = try Self.checkTable(header, path: path, fileSize: fileSize)
        guard prefix.count >= tableEnd else {
            throw .truncated(
                path: path,
                what: "descriptor table: need the first \(tableEnd) bytes, have \(prefix.count)"
            )
        }
        try self.init(path: path, header: header, table: Array(prefix[Int(header.descriptorsOffset)..<Int(tableEnd)]), fileSize: fileSize)
    }

    /// Parses the descriptor table (`header.descriptorsTotal` slots, already checked by `checkTable`).
    private init(path: String, header: SIFHeader, table: [UInt8], fileSize: Int64) throws(SIFError) {
        var descriptors: [SIFDescriptor] = []
        for slot in 0..<Int(header.descriptorsTotal) {
            let base = slot * SIFLayout.descriptorSize
            guard table[base + 4] != 0 else { continue }  // Used
            let rawType: Int32 = readLE(table, base)
            let id: UInt32 = readLE(table, base + 5)
            let group: UInt32 = readLE(table, base + 9)
            let linked: UInt32 = readLE(table, base + 13)
            let offset: Int64 = readLE(table, base + 17)
            let size: Int64 = readLE(table, base + 25)
            let name = decodeCString(table[(base + 73)..<(base + 73 + SIFLayout.nameLength)])
            let label = Self.label(id: id, rawType: rawType, name: name)

            guard offset >= 0, size >= 0 else {
                throw .invalid("\(path): \(label) has a negative offset (\(offset)) or size (\(size))")
            }
            let (end, overflow) = offset.addingReportingOverflow(size)
            guard !overflow else { throw .invalid("\(path): \(label): offset \(offset) + size \(size) overflows") }
            guard end <= fileSize else {
                throw .truncated(
                    path: path,
                    what: "\(label) spans bytes \(offset)..<\(end) but the file is only \(fileSize) bytes"
                )
            }
            guard let dataType = SIFDataType(rawValue: rawType) else { continue }

            let extraStart = base + 201
            let extra = Array(table[extraStart..<(extraStart + SIFLayout.extraLength)])
            var partition: SIFPartitionInfo?
            if dataType == .partition,
                let fs = SIFFilesystem(rawValue: readLE(extra, 0)),
                let type = SIFPartitionType(rawValue: readLE(extra, 4))
            {
                partition = SIFPartitionInfo(filesystem: fs, type: type, arch: SIFArch(bytes: extra[8..<11]))
            }
            descriptors.append(
                SIFDescriptor(
                    dataType: dataType,
                    id: id,
                    groupID: group & ~SIFLayout.groupMask,
                    linkedID: linked & ~SIFLayout.groupMask,
                    linkedIsGroup: linked & SIFLayout.groupMask == SIFLayout.groupMask,
                    offset: offset,
                    size: size,
                    sizeWithPadding: readLE(table, base + 33),
                    createdAt: readLE(table, base + 41),
                    modifiedAt: readLE(table, base + 49),
                    name: name,
                    partition: partition,
                    extra: extra,
                    slot: slot
                )
            )
        }
        self.path = path
        self.header = header
        self.descriptors = descriptors
        self.fileSize = fileSize
    }

    /// The partition with type `.primarySystem`.
    public var primaryPartition: SIFDescriptor? {
        descriptors.first { $0.partition?.type == .primarySystem }
    }

    public func requirePrimaryPartition() throws(SIFError) -> SIFDescriptor {
        if let primary = primaryPartition { return primary }
        // A primary partition whose filesystem type this code does not know (e.g. Apptainer's
        // gocryptfs squashfs, 6) is reported as such rather than as missing.
        if let odd = descriptors.first(where: {
            $0.dataType == .partition && readLE($0.extra, 4, as: Int32.self) == SIFPartitionType.primarySystem.rawValue
        }) {
            let fs: Int32 = readLE(odd.extra, 0)
            throw .invalid("\(path): primary partition (object \(odd.id)) has unsupported filesystem type \(fs)")
        }
        throw .noPrimaryPartition(path: path)
    }

    public func objects(ofType type: SIFDataType) -> [SIFDescriptor] {
        descriptors.filter { $0.dataType == type }
    }

    /// The first object named `name`.
    public func object(named name: String) -> SIFDescriptor? {
        descriptors.first { $0.name == name }
    }

    /// Reads an object's bytes; refuses objects larger than `limit`.
    public func read(_ descriptor: SIFDescriptor, limit: Int = 16 << 20) throws(SIFError) -> [UInt8] {
        let label = Self.label(id: descriptor.id, rawType: descriptor.dataType.rawValue, name: descriptor.name)
        guard descriptor.offset >= 0, descriptor.size >= 0 else {
            throw .invalid("\(path): \(label) has a negative offset or size")
        }
        guard descriptor.size <= Int64(limit) else {
            throw .invalid("\(path): \(label) is \(descriptor.size) bytes, over the read limit of \(limit)")
        }
        let file = try RawFile(path: path, flags: O_RDONLY)
        let bytes = try file.read(count: Int(descriptor.size), at: descriptor.offset)
        guard bytes.count == Int(descriptor.size) else {
            throw .truncated(
                path: path,
                what: "\(label) spans bytes \(descriptor.offset)..<\(descriptor.offset + descriptor.size) "
                    + "but only \(bytes.count) bytes could be read"
            )
        }
        return bytes
    }

    // MARK: - Parsing

    static func label(id: UInt32, rawType: Int32, name: String) -> String {
        let typeName = SIFDataType(rawValue: rawType)?.description ?? "type 0x" + String(rawType, radix: 16)
        return name.isEmpty ? "object \(id) (\(typeName))" : "object \(id) (\(typeName) \"\(name)\")"
    }

    static func parseHeader(_ bytes: [UInt8], path: String) throws(SIFError) -> SIFHeader {
        let magicRange = 32..<(32 + SIFLayout.magic.count)
        guard bytes.count >= magicRange.upperBound, Array(bytes[magicRange]) == SIFLayout.magic else {
            throw .notSIF(path: path)
        }
        guard bytes.count >= SIFLayout.headerSize else {
            throw .truncated(path: path, what: "header: \(bytes.count) of \(SIFLayout.headerSize) bytes")
        }
        let versionBytes = bytes[42..<45]
        guard Array(versionBytes) == Array(SIFLayout.version.utf8) + [0] else {
            let text = decodeCString(versionBytes)
            let printable = text.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value < 0x7F }
            throw .unsupportedVersion(printable ? text : versionBytes.map { String($0, radix: 16) }.joined(separator: " "))
        }
        return SIFHeader(
            launchScript: decodeCString(bytes[0..<SIFLayout.launchScriptLength]),
            version: SIFLayout.version,
            arch: SIFArch(bytes: bytes[45..<48]),
            id: Array(bytes[48..<64]),
            createdAt: readLE(bytes, 64),
            modifiedAt: readLE(bytes, 72),
            descriptorsFree: readLE(bytes, 80),
            descriptorsTotal: readLE(bytes, 88),
            descriptorsOffset: readLE(bytes, 96),
            descriptorsSize: readLE(bytes, 104),
            dataOffset: readLE(bytes, 112),
            dataSize: readLE(bytes, 120)
        )
    }

    /// Validates the table fields; returns the end offset of the table.
    static func checkTable(_ h: SIFHeader, path: String, fileSize: Int64) throws(SIFError) -> Int64 {
        guard h.descriptorsTotal >= 0, h.descriptorsTotal <= Int64(SIFLayout.maxDescriptors) else {
            throw .invalid("\(path): descriptorsTotal \(h.descriptorsTotal) out of range")
        }
        let tableSize = h.descriptorsTotal * Int64(SIFLayout.descriptorSize)
        guard h.descriptorsSize >= tableSize else {
            throw .invalid(
                "\(path): descriptorsSize \(h.descriptorsSize) is too small for \(h.descriptorsTotal) descriptors"
            )
        }
        guard h.descriptorsOffset >= Int64(SIFLayout.headerSize), h.descriptorsOffset <= Int64(Int32.max) else {
            throw .invalid("\(path): descriptorsOffset \(h.descriptorsOffset) out of range")
        }
        let tableEnd = h.descriptorsOffset + tableSize
        guard tableEnd <= fileSize else {
            throw .truncated(
                path: path,
                what: "descriptor table spans bytes \(h.descriptorsOffset)..<\(tableEnd) but the file is only "
                    + "\(fileSize) bytes"
            )
        }
        return tableEnd
    }
}
