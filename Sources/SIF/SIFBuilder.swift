import Crypto
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a SIF whose primary partition is produced by someone else *in place*: compute the layout first,
/// let the caller write the partition bytes at `partitionOffset` of the same file (e.g. `mksquashfs -o OFFSET`),
/// then write header, descriptors and small objects around it.
///
/// The result matches what Apptainer writes through sylabs/apptainer `sif.CreateContainerAtPath`: all objects
/// in group 1, IDs = slot index + 1, small objects packed from `dataOffset` in the order added, then the
/// partition aligned to 4096 with the gap counted in its `sizeWithPadding`, header arch taken from the
/// primary partition.
///
/// Note that `mksquashfs OUT -o N` opens OUT with `O_TRUNC`, so it must run *before* `write(to:)`.
public struct SIFBuilder: Sendable {
    struct SmallObject: Sendable {
        var type: SIFDataType
        var name: String
        var bytes: [UInt8]
        var extra: [UInt8]
    }

    public var launchScript: String
    public var createdAt: Int64
    /// 16 raw UUID bytes.
    public var id: [UInt8]
    public var descriptorCapacity: Int
    /// The group every object is put in (stored ORed with 0xF0000000); 0 = no group. Apptainer uses 1.
    public var groupID: UInt32 = 1
    var objects: [SmallObject] = []

    public init(
        launchScript: String = SIFLayout.defaultLaunchScript,
        createdAt: Int64 = Int64(Date().timeIntervalSince1970),
        id: [UInt8]? = nil,
        descriptorCapacity: Int = SIFLayout.defaultDescriptorCapacity
    ) {
        self.launchScript = launchScript
        self.createdAt = createdAt
        self.id = id ?? withUnsafeBytes(of: UUID().uuid) { Array($0) }
        self.descriptorCapacity = descriptorCapacity
    }

    /// Adds a small object (definition file, JSON, labels, …), packed with no alignment before the partition,
    /// in the order added. For `.ociRootIndex`/`.ociBlob` the Extra field is set to the bytes' "sha256:…"
    /// digest as the reference does; otherwise `extra` (at most 384 bytes) is stored as given.
    public mutating func addObject(_ type: SIFDataType, name: String, bytes: [UInt8], extra: [UInt8] = []) {
        var extra = extra
        if type == .ociRootIndex || type == .ociBlob {
            extra = Array(("sha256:" + SHA256.hash(data: bytes).map { byte -> String in
                let s = String(byte, radix: 16)
                return s.count == 1 ? "0" + s : s
            }.joined()).utf8)
        }
        objects.append(SmallObject(type: type, name: name, bytes: bytes, extra: extra))
    }

    public var descriptorsOffset: Int64 { SIFLayout.defaultDescriptorsOffset }
    public var descriptorsSize: Int64 { Int64(max(descriptorCapacity, 0)) * Int64(SIFLayout.descriptorSize) }
    /// Where the first small object goes: right after the descriptor table (32,176 by default).
    public var dataOffset: Int64 { descriptorsOffset + descriptorsSize }
    /// End of the last small object.
    public var smallObjectsEnd: Int64 { objects.reduce(dataOffset) { $0 + Int64($1.bytes.count) } }
    /// Where the partition must start: after the small objects, rounded up to 4096.
    public var partitionOffset: Int64 { roundUp(smallObjectsEnd, to: SIFLayout.partitionAlignment) }

    /// Writes header + descriptor table + small objects into the file at `path` with pwrite, WITHOUT
    /// truncating it (the partition bytes at partitionOffset ..< partitionOffset+partitionSize are already
    /// there, or are written afterwards by the caller). Everything before `partitionOffset` is overwritten,
    /// including the zero padding. Creates the file if missing. Sets mode 0755.
    public func write(
        to path: String,
        partition: SIFPartitionInfo,
        partitionSize: Int64,
        partitionName: String = "rootfs"
    ) throws(SIFError) {
        let prefix = try encodePrefix(partition: partition, partitionSize: partitionSize, partitionName: partitionName)
        let file = try RawFile(path: path, flags: O_WRONLY | O_CREAT, mode: 0o755)
        try file.write(prefix, at: 0)
        try file.chmod(0o755)
        try file.closeChecked()
    }

    /// The bytes `0 ..< partitionOffset` of the image: header, zero padding, descriptor table, small objects
    /// and the zero gap before the partition.
    public func encodePrefix(
        partition: SIFPartitionInfo,
        partitionSize: Int64,
        partitionName: String = "rootfs"
    ) throws(SIFError) -> [UInt8] {
        try validate(partition: partition, partitionSize: partitionSize, partitionName: partitionName)

        let partitionOffset = self.partitionOffset
        var out = [UInt8](repeating: 0, count: Int(partitionOffset))

        // Descriptors and small objects.
        var cursor = dataOffset
        for (index, object) in objects.enumerated() {
            let size = Int64(object.bytes.count)
            encodeDescriptor(
                into: &out, slot: index, type: object.type, offset: cursor, size: size, sizeWithPadding: size,
                name: object.name, extra: object.extra
            )
            out.replaceSubrange(Int(cursor)..<Int(cursor + size), with: object.bytes)
            cursor += size
        }
        var partitionExtra = [UInt8](repeating: 0, count: 8)
        writeLE(partition.filesystem.rawValue, into: &partitionExtra, at: 0)
        writeLE(partition.type.rawValue, into: &partitionExtra, at: 4)
        partitionExtra += partition.arch.bytes
        encodeDescriptor(
            into: &out, slot: objects.count, type: .partition, offset: partitionOffset, size: partitionSize,
            sizeWithPadding: partitionOffset - cursor + partitionSize, name: partitionName, extra: partitionExtra
        )

        // Header.
        out.replaceSubrange(0..<launchScript.utf8.count, with: Array(launchScript.utf8))
        out.replaceSubrange(32..<42, with: SIFLayout.magic)
        out.replaceSubrange(42..<45, with: Array(SIFLayout.version.utf8) + [0])
        let headerArch = partition.type == .primarySystem ? partition.arch : .unknown
        out.replaceSubrange(45..<48, with: headerArch.bytes)
        out.replaceSubrange(48..<64, with: id)
        writeLE(createdAt, into: &out, at: 64)
        writeLE(createdAt, into: &out, at: 72)  // ModifiedAt
        writeLE(Int64(descriptorCapacity - objects.count - 1), into: &out, at: 80)  // DescriptorsFree
        writeLE(Int64(descriptorCapacity), into: &out, at: 88)
        writeLE(descriptorsOffset, into: &out, at: 96)
        writeLE(descriptorsSize, into: &out, at: 104)
        writeLE(dataOffset, into: &out, at: 112)
        writeLE(partitionOffset + partitionSize - dataOffset, into: &out, at: 120)  // DataSize
        return out
    }

    func validate(partition: SIFPartitionInfo, partitionSize: Int64, partitionName: String) throws(SIFError) {
        guard launchScript.utf8.count < SIFLayout.launchScriptLength else {
            throw .invalid("launch script is \(launchScript.utf8.count) bytes; it must be shorter than 32")
        }
        guard id.count == 16 else { throw .invalid("image ID must be 16 bytes, got \(id.count)") }
        guard descriptorCapacity >= objects.count + 1, descriptorCapacity <= SIFLayout.maxDescriptors else {
            throw .invalid(
                "descriptor capacity \(descriptorCapacity) cannot hold \(objects.count + 1) objects "
                    + "(maximum \(SIFLayout.maxDescriptors))"
            )
        }
        guard partitionSize >= 0, partitionSize <= Int64.max - partitionOffset else {
            throw .invalid("partition size \(partitionSize) out of range")
        }
        guard partition.arch.code.utf8.count == 2 else {
            throw .invalid("architecture code \"\(partition.arch.code)\" is not two characters")
        }
        guard partitionName.utf8.count <= SIFLayout.nameLength else {
            throw .invalid("partition name is \(partitionName.utf8.count) bytes; the maximum is 128")
        }
        for object in objects {
            guard object.type != .partition else {
                throw .invalid("partition \"\(object.name)\" added with addObject; pass the partition to write(to:)")
            }
            guard object.name.utf8.count <= SIFLayout.nameLength else {
                throw .invalid("object name \"\(object.name)\" is longer than 128 bytes")
            }
            guard object.extra.count <= SIFLayout.extraLength else {
                throw .invalid("extra metadata of \"\(object.name)\" is longer than 384 bytes")
            }
        }
    }

    func encodeDescriptor(
        into out: inout [UInt8], slot: Int, type: SIFDataType, offset: Int64, size: Int64, sizeWithPadding: Int64,
        name: String, extra: [UInt8]
    ) {
        let base = Int(descriptorsOffset) + slot * SIFLayout.descriptorSize
        writeLE(type.rawValue, into: &out, at: base)
        out[base + 4] = 1  // Used
        writeLE(UInt32(slot + 1), into: &out, at: base + 5)  // ID
        writeLE(groupID | SIFLayout.groupMask, into: &out, at: base + 9)
        writeLE(UInt32(0), into: &out, at: base + 13)  // LinkedID
        writeLE(offset, into: &out, at: base + 17)
        writeLE(size, into: &out, at: base + 25)
        writeLE(sizeWithPadding, into: &out, at: base + 33)
        writeLE(createdAt, into: &out, at: base + 41)
        writeLE(createdAt, into: &out, at: base + 49)  // ModifiedAt
        // UID and GID (deprecated) stay 0.
        let nameBytes = Array(name.utf8)
        out.replaceSubrange((base + 73)..<(base + 73 + nameBytes.count), with: nameBytes)
        out.replaceSubrange((base + 201)..<(base + 201 + extra.count), with: extra)
    }
}

extension SIFBuilder {
    /// An object whose bytes the caller wrote into the file at `offset` (an OCI-SIF's layer blobs, too large to
    /// hold in memory).
    public struct PlacedObject: Sendable {
        public var type: SIFDataType
        public var name: String
        public var offset: Int64
        public var size: Int64
        public var extra: [UInt8]

        public init(type: SIFDataType, name: String = "", offset: Int64, size: Int64, extra: [UInt8] = []) {
            self.type = type
            self.name = name
            self.offset = offset
            self.size = size
            self.extra = extra
        }

        /// An OCI blob or root index: Extra holds its digest, as SingularityCE writes it.
        public static func oci(_ type: SIFDataType, offset: Int64, size: Int64, digest: String) -> PlacedObject {
            PlacedObject(type: type, offset: offset, size: size, extra: Array(digest.utf8))
        }
    }

    /// Writes the header and descriptor table of a SIF whose objects the caller placed from `dataOffset` on, in
    /// the order given (no alignment, as SingularityCE writes OCI blobs).
    public func writeDescriptors(to path: String, objects: [PlacedObject], arch: SIFArch = .unknown) throws(SIFError) {
        guard launchScript.utf8.count < SIFLayout.launchScriptLength, id.count == 16 else { throw .invalid("bad launch script or image ID") }
        guard objects.count <= descriptorCapacity else {
            throw .invalid("descriptor capacity \(descriptorCapacity) cannot hold \(objects.count) objects")
        }
        var out = [UInt8](repeating: 0, count: Int(dataOffset))
        var end = dataOffset
        for (slot, object) in objects.enumerated() {
            guard object.offset >= dataOffset, object.size >= 0, object.name.utf8.count <= SIFLayout.nameLength,
                object.extra.count <= SIFLayout.extraLength
            else { throw .invalid("object \(slot + 1) lies outside the data section or has too long a name or extra field") }
            encodeDescriptor(
                into: &out, slot: slot, type: object.type, offset: object.offset, size: object.size, sizeWithPadding: object.size, name: object.name,
                extra: object.extra)
            end = max(end, object.offset + object.size)
        }
        out.replaceSubrange(0..<launchScript.utf8.count, with: Array(launchScript.utf8))
        out.replaceSubrange(32..<42, with: SIFLayout.magic)
        out.replaceSubrange(42..<45, with: Array(SIFLayout.version.utf8) + [0])
        out.replaceSubrange(45..<48, with: arch.bytes)
        out.replaceSubrange(48..<64, with: id)
        writeLE(createdAt, into: &out, at: 64)
        writeLE(createdAt, into: &out, at: 72)
        writeLE(Int64(descriptorCapacity - objects.count), into: &out, at: 80)
        writeLE(Int64(descriptorCapacity), into: &out, at: 88)
        writeLE(descriptorsOffset, into: &out, at: 96)
        writeLE(descriptorsSize, into: &out, at: 104)
        writeLE(dataOffset, into: &out, at: 112)
        writeLE(end - dataOffset, into: &out, at: 120)
        let file = try RawFile(path: path, flags: O_WRONLY | O_CREAT, mode: 0o755)
        try file.write(out, at: 0)
        try file.chmod(0o755)
        try file.closeChecked()
    }
}
