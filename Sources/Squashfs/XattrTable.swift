import ImageTree

/// The extended attributes of a squashfs: each distinct set of name/value pairs written once in the key/value
/// stream and given an id, which inodes store.
struct XattrTable {
    private var values: MetadataStream
    private var ids: LookupTable
    private var idOfSet: [[XattrPair]: UInt32] = [:]
    private(set) var count: UInt32 = 0

    struct XattrPair: Hashable {
        var type: UInt16
        var name: [UInt8]
        var value: [UInt8]
    }

    init(compressor: ZlibBlockCompressor) {
        values = MetadataStream(compressor: compressor)
        ids = LookupTable(compressor: compressor)
    }

    /// The id of `xattrs` (written the first time the set is seen), or `SquashfsFormat.noXattr` when none of them
    /// has a prefix squashfs can store (user., trusted., security.) or `keep` rejects them all.
    mutating func id(of xattrs: [String: [UInt8]], keep: (String) -> Bool) -> UInt32 {
        var pairs: [XattrPair] = []
        for (name, value) in xattrs where keep(name) {
            guard let prefix = SquashfsFormat.xattrPrefixes.first(where: { name.hasPrefix($0.prefix) && name.utf8.count > $0.prefix.utf8.count })
            else { continue }
            pairs.append(XattrPair(type: prefix.type, name: Array(name.utf8.dropFirst(prefix.prefix.utf8.count)), value: value))
        }
        guard !pairs.isEmpty else { return SquashfsFormat.noXattr }
        pairs.sort { $0.type != $1.type ? $0.type < $1.type : $0.name.lexicographicallyPrecedes($1.name) }
        if let existing = idOfSet[pairs] { return existing }
        let reference = values.reference
        var encoded: [UInt8] = []
        for pair in pairs {
            encoded.appendLE(pair.type)
            encoded.appendLE(UInt16(pair.name.count))
            encoded += pair.name
            encoded.appendLE(UInt32(pair.value.count))
            encoded += pair.value
        }
        values.append(encoded)
        var record: [UInt8] = []
        record.appendLE(reference)
        record.appendLE(UInt32(pairs.count))
        record.appendLE(UInt32(encoded.count))
        ids.records.append(record)
        idOfSet[pairs] = count
        count += 1
        return count - 1
    }

    /// The key/value stream, the id records and the header the superblock points at, to write at `position`;
    /// nil when no inode has extended attributes (the kernel rejects an empty table).
    mutating func encode(at position: UInt64) -> (bytes: [UInt8], tablePosition: UInt64)? {
        guard count > 0 else { return nil }
        var bytes = values.finish()
        let (idBytes, idIndexPosition) = ids.encode(at: position + UInt64(bytes.count))
        // The header sits where the id index would: before the index of id blocks, which must end the filesystem.
        let indexLength = (Int(count) * 16 + SquashfsFormat.metadataBlockSize - 1) / SquashfsFormat.metadataBlockSize * 8
        bytes += idBytes.dropLast(indexLength)
        let tablePosition = idIndexPosition
        bytes.appendLE(position)
        bytes.appendLE(count)
        bytes.appendLE(UInt32(0))
        bytes += idBytes.suffix(indexLength)
        return (bytes, tablePosition)
    }
}
