import ImageTree

/// A squashfs metadata table being written: records appended back to back, cut into 8 KiB blocks, each stored
/// behind a 16-bit header (compressed unless that would not make it smaller). A record's reference is the
/// on-disk offset of its block from the table's start, shifted left 16, ORed with its offset in the block.
struct MetadataStream {
    private(set) var encoded: [UInt8] = []
    /// On-disk offset (from the table's start) of every block written, for the lookup tables that index them.
    private(set) var blockStarts: [UInt64] = []
    private var pending: [UInt8] = []
    /// Bytes appended so far, uncompressed.
    private(set) var uncompressedCount = 0
    private let compressor: ZlibBlockCompressor

    init(compressor: ZlibBlockCompressor) {
        self.compressor = compressor
        pending.reserveCapacity(SquashfsFormat.metadataBlockSize)
    }

    /// Where the next record starts.
    var reference: UInt64 { UInt64(encoded.count) << 16 | UInt64(pending.count) }
    /// On-disk offset of the block the next record starts in.
    var currentBlockStart: UInt64 { UInt64(encoded.count) }
    var offsetInBlock: Int { pending.count }

    mutating func append(_ bytes: [UInt8]) {
        uncompressedCount += bytes.count
        var rest = bytes[...]
        while !rest.isEmpty {
            let room = SquashfsFormat.metadataBlockSize - pending.count
            pending += rest.prefix(room)
            rest = rest.dropFirst(room)
            if pending.count == SquashfsFormat.metadataBlockSize { flush() }
        }
    }

    /// The table's bytes, the last partial block included.
    mutating func finish() -> [UInt8] {
        if !pending.isEmpty { flush() }
        return encoded
    }

    private mutating func flush() {
        blockStarts.append(UInt64(encoded.count))
        if let compressed = pending.withUnsafeBytes({ compressor.compress($0) }) {
            encoded.appendLE(UInt16(compressed.count))
            encoded += compressed
        } else {
            encoded.appendLE(UInt16(pending.count) | SquashfsFormat.metadataUncompressed)
            encoded += pending
        }
        pending.removeAll(keepingCapacity: true)
    }
}

/// A table of fixed-size records (fragments, exports, ids, xattr ids): the records' metadata blocks, then a raw
/// array of the blocks' absolute positions, which is what the superblock points at.
struct LookupTable {
    var records: MetadataStream

    init(compressor: ZlibBlockCompressor) { records = MetadataStream(compressor: compressor) }

    /// The bytes to write at `position` (absolute, from the start of the filesystem), and where the index array
    /// starts, to go in the superblock.
    mutating func encode(at position: UInt64) -> (bytes: [UInt8], indexPosition: UInt64) {
        var bytes = records.finish()
        let indexPosition = position + UInt64(bytes.count)
        for start in records.blockStarts { bytes.appendLE(position + start) }
        return (bytes, indexPosition)
    }
}
