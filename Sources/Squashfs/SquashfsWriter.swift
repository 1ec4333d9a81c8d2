import CLinux
import Foundation
import ImageTree

/// Writes an `ImageTree` as a squashfs 4.0 filesystem with gzip (zlib) compression, the format Apptainer runs and
/// the kernel, squashfuse and unsquashfs read. Nothing is written to a directory first: file bytes are read from
/// the layer cache (or memory) once to be hashed and once to be compressed.
///
/// - Data blocks are compressed with libdeflate on every core, in bounded batches, and written in file order, so
///   the output does not depend on the number of threads.
/// - Files with the same bytes are stored once; tails are packed into fragment blocks.
/// - With `reuse`, a file whose bytes an earlier image already stored (same content digest, compressor, level
///   and block size) is copied from it block for block instead of compressed; the report's `index` says where
///   this image's blocks are, for the next one.
/// - The same tree and options give the same bytes: inode numbers, file order, fragment packing, id order and
///   timestamps depend on nothing else (`modificationTime` defaults to `SOURCE_DATE_EPOCH`).
public enum SquashfsWriter {
    public struct Options: Sendable {
        /// A power of two from 4 KiB to 1 MiB; 128 KiB is mksquashfs's and Apptainer's.
        public var blockSize = 131_072
        /// libdeflate level (1-12); 9 is mksquashfs's default for gzip.
        public var level = 9
        public var workers = ProcessInfo.processInfo.activeProcessorCount
        /// The export table lets the filesystem be exported over NFS; mksquashfs writes it by default.
        public var exportTable = true
        /// The superblock's creation time.
        public var modificationTime = SquashfsWriter.defaultModificationTime
        /// Extended attributes to store (by name); squashfs can hold `user.`, `trusted.` and `security.` ones.
        public var keepXattr: @Sendable (String) -> Bool = { _ in true }
        /// Where files never change once written (the store's layer cache): the index records their digests by
        /// path, and a later image trusts them instead of reading the files again.
        public var immutableSources: String?

        public init() {}

        /// What a reused block must have been written with: the same bytes come out only for the same
        /// compressor, level and block size.
        public var settings: String { "zlib libdeflate-\(ZlibBlockCompressor.libraryVersion) level \(level) block \(blockSize)" }
    }

    public struct Report: Sendable {
        /// The filesystem's size, padded to 4 KiB as loop devices need.
        public var bytes: UInt64
        public var inodes: Int
        public var data: DataStatistics
        /// Where this image's blocks are, as offsets in the output file.
        public var index: BlockIndex
    }

    /// `SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
    public static var defaultModificationTime: UInt32 {
        if let epoch = ProcessInfo.processInfo.environment["SOURCE_DATE_EPOCH"].flatMap(UInt32.init) { return epoch }
        return UInt32(clamping: Int64(Date().timeIntervalSince1970))
    }

    /// Writes `tree` into the open file `descriptor` from byte `offset` on (earlier bytes are left alone) and
    /// returns what was written. Blocking: call it off Swift's cooperative pool.
    public static func write(
        _ tree: ImageTree, to descriptor: Int32, path: String, at offset: Int64, options: Options = Options(), reuse: ReusableBlocks? = nil
    ) throws(SquashfsError) -> Report {
        guard options.blockSize.nonzeroBitCount == 1, (4096...(1 << 20)).contains(options.blockSize) else {
            throw .invalidOptions("block size \(options.blockSize) is not a power of two from 4 KiB to 1 MiB")
        }
        let walk = try TreeWalk(tree)
        var files: [SourceFile] = []
        var fileInodes: [UInt64] = []
        for ino in walk.order {
            guard let node = tree.node(ino), !node.isDirectory else { continue }
            switch node.kind {
            case .regular, .hardlink:
                files.append(try SourceFile(path: walk.paths[ino] ?? "", size: node.size, content: node.content))
                fileInodes.append(ino)
            default: continue
            }
        }
        let output = OutputFile(descriptor: descriptor, base: offset, path: path)
        try output.append([UInt8](repeating: 0, count: SquashfsFormat.superblockSize))

        let known = reuse?.knownDigests ?? [:]
        let digests = try SourceFile.digests(of: files, known: known, workers: options.workers)
        let data = try DataWriter(
            blockSize: options.blockSize, level: options.level, workers: options.workers, output: output, reuse: reuse, settings: options.settings)
        defer { data.stop() }
        let layoutIndices = try data.write(files, digests: digests)
        // The data is most of the file: its writeback starts now, while the tables are built, so the caller's
        // fsync has less left to wait for.
        try output.flush()
        _ = sync_file_range(descriptor, Int(offset), Int(output.position), UInt32(SLIPWAY_SYNC_FILE_RANGE_WRITE))
        data.statistics.filesHashed = files.count { file in file.localPath.map { known[$0] == nil } ?? true }
        var index = data.index
        if let prefix = options.immutableSources {
            for (file, digest) in zip(files, digests) {
                if let path = file.localPath, path.hasPrefix(prefix) { index.sources[path] = digest }
            }
        }

        let compressor = try ZlibBlockCompressor(level: options.level)
        var tables = try InodeTables(
            walk: walk, layouts: data.layouts, layoutOf: Dictionary(uniqueKeysWithValues: zip(fileInodes, layoutIndices)), compressor: compressor,
            keepXattr: options.keepXattr)

        var superblock = Superblock(blockSize: options.blockSize, modificationTime: options.modificationTime)
        superblock.inodeCount = UInt32(walk.order.count)
        superblock.rootInode = tables.rootReference
        superblock.fragmentCount = UInt32(data.fragments.count)
        superblock.inodeTable = output.position
        try output.append(tables.inodes.finish())
        superblock.directoryTable = output.position
        try output.append(tables.directories.finish())

        var fragmentTable = LookupTable(compressor: compressor)
        for fragment in data.fragments {
            var record: [UInt8] = []
            record.appendLE(fragment.start)
            record.appendLE(fragment.size)
            record.appendLE(UInt32(0))
            fragmentTable.records.append(record)
        }
        superblock.fragmentTable = try appendTable(&fragmentTable, to: output)
        if options.exportTable {
            var exportTable = LookupTable(compressor: compressor)
            for reference in tables.exportReferences {
                var record: [UInt8] = []
                record.appendLE(reference)
                exportTable.records.append(record)
            }
            superblock.exportTable = try appendTable(&exportTable, to: output)
            superblock.flags |= SquashfsFormat.Flag.exportable
        }
        var idTable = LookupTable(compressor: compressor)
        for id in tables.ids {
            var record: [UInt8] = []
            record.appendLE(id)
            idTable.records.append(record)
        }
        superblock.idCount = UInt16(tables.ids.count)
        superblock.idTable = try appendTable(&idTable, to: output)
        var xattrs = tables.xattrs
        if let (bytes, tablePosition) = xattrs.encode(at: output.position) {
            superblock.xattrTable = tablePosition
            try output.append(bytes)
        } else {
            superblock.flags |= SquashfsFormat.Flag.noXattrs
        }
        superblock.bytesUsed = output.position
        let padded = (output.position + 4095) / 4096 * 4096
        try output.append([UInt8](repeating: 0, count: Int(padded - output.position)))
        try output.write(superblock.encoded(), at: 0)
        return Report(bytes: padded, inodes: walk.order.count, data: data.statistics, index: index)
    }

    private static func appendTable(_ table: inout LookupTable, to output: OutputFile) throws(SquashfsError) -> UInt64 {
        let (bytes, indexPosition) = table.encode(at: output.position)
        try output.append(bytes)
        return indexPosition
    }
}

struct Superblock {
    var inodeCount: UInt32 = 0
    var modificationTime: UInt32
    var blockSize: UInt32
    var fragmentCount: UInt32 = 0
    var flags: UInt16 = SquashfsFormat.Flag.duplicates
    var idCount: UInt16 = 0
    var rootInode: UInt64 = 0
    var bytesUsed: UInt64 = 0
    var idTable: UInt64 = 0
    var xattrTable = SquashfsFormat.absentTable
    var inodeTable: UInt64 = 0
    var directoryTable: UInt64 = 0
    var fragmentTable: UInt64 = 0
    var exportTable = SquashfsFormat.absentTable

    init(blockSize: Int, modificationTime: UInt32) {
        self.blockSize = UInt32(blockSize)
        self.modificationTime = modificationTime
    }

    func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendLE(SquashfsFormat.magic)
        bytes.appendLE(inodeCount)
        bytes.appendLE(modificationTime)
        bytes.appendLE(blockSize)
        bytes.appendLE(fragmentCount)
        bytes.appendLE(SquashfsFormat.compressorGzip)
        bytes.appendLE(UInt16(blockSize.trailingZeroBitCount))
        bytes.appendLE(flags)
        bytes.appendLE(idCount)
        bytes.appendLE(UInt16(4))
        bytes.appendLE(UInt16(0))
        bytes.appendLE(rootInode)
        bytes.appendLE(bytesUsed)
        bytes.appendLE(idTable)
        bytes.appendLE(xattrTable)
        bytes.appendLE(inodeTable)
        bytes.appendLE(directoryTable)
        bytes.appendLE(fragmentTable)
        bytes.appendLE(exportTable)
        return bytes
    }
}
