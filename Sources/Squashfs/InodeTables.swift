import ImageTree

/// The inode and directory tables of a squashfs, with the owner ids and extended attributes they refer to,
/// written in `TreeWalk` order.
struct InodeTables {
    private let walk: TreeWalk
    private let layouts: [FileLayout]
    /// Per regular-file inode, the index of its layout.
    private let layoutOf: [UInt64: Int]
    private let keepXattr: (String) -> Bool
    var inodes: MetadataStream
    var directories: MetadataStream
    private(set) var xattrs: XattrTable
    /// Owner ids in first-use order.
    private(set) var ids: [UInt32] = []
    private var idIndex: [UInt32: UInt16] = [:]
    private var references: [UInt64: UInt64] = [:]
    /// Inode references by inode number - 1: the export table.
    private(set) var exportReferences: [UInt64]
    private(set) var rootReference: UInt64 = 0

    private struct Entry {
        var name: [UInt8]
        var number: UInt32
        var reference: UInt64
        var type: SquashfsFormat.InodeType
    }

    init(
        walk: TreeWalk, layouts: [FileLayout], layoutOf: [UInt64: Int], compressor: ZlibBlockCompressor,
        keepXattr: @escaping (String) -> Bool
    ) throws(SquashfsError) {
        self.walk = walk
        self.layouts = layouts
        self.layoutOf = layoutOf
        self.keepXattr = keepXattr
        inodes = MetadataStream(compressor: compressor)
        directories = MetadataStream(compressor: compressor)
        xattrs = XattrTable(compressor: compressor)
        exportReferences = Array(repeating: 0, count: walk.order.count)
        let rootNumber = walk.numbers[ImageTree.rootIno] ?? 1
        rootReference = try writeDirectory(ImageTree.rootIno, parentNumber: rootNumber + 1)
    }

    private mutating func writeDirectory(_ ino: UInt64, parentNumber: UInt32) throws(SquashfsError) -> UInt64 {
        let number = walk.numbers[ino]!
        var entries: [Entry] = []
        var subdirectories: UInt32 = 0
        for child in walk.sortedChildren[ino] ?? [] {
            guard let node = walk.tree.node(child.ino) else { continue }
            let reference: UInt64
            if let written = references[child.ino] {
                reference = written
            } else if node.isDirectory {
                reference = try writeDirectory(child.ino, parentNumber: number)
            } else {
                reference = try writeInode(node)
            }
            if node.isDirectory { subdirectories += 1 }
            entries.append(Entry(name: Array(child.name.utf8), number: walk.numbers[child.ino]!, reference: reference, type: Self.basicType(node)))
        }
        let path = walk.paths[ino] ?? ""
        let listing = try writeListing(entries, path: path)
        let node = walk.tree.node(ino)!
        let xattr = xattrs.id(of: node.xattrs, keep: keepXattr)
        let listingSize = UInt64(listing.size) + 3
        var record = try header(node, type: .directory, extended: false, number: number)
        if xattr == SquashfsFormat.noXattr, listing.index.isEmpty, listingSize <= UInt64(UInt16.max) {
            record.appendLE(listing.block)
            record.appendLE(2 + subdirectories)
            record.appendLE(UInt16(listingSize))
            record.appendLE(listing.offset)
            record.appendLE(parentNumber)
        } else {
            guard listingSize <= UInt64(UInt32.max), listing.index.count <= Int(UInt16.max) else {
                throw .tooLarge(field: "a directory listing's size", path: path, value: listingSize, limit: UInt64(UInt32.max))
            }
            record = try header(node, type: .directory, extended: true, number: number)
            record.appendLE(2 + subdirectories)
            record.appendLE(UInt32(listingSize))
            record.appendLE(listing.block)
            record.appendLE(parentNumber)
            record.appendLE(UInt16(listing.index.count))
            record.appendLE(listing.offset)
            record.appendLE(xattr)
            for entry in listing.index {
                record.appendLE(entry.position)
                record.appendLE(entry.block)
                record.appendLE(UInt32(entry.name.count - 1))
                record += entry.name
            }
        }
        return append(record, for: ino, number: number)
    }

    private struct Listing {
        var block: UInt32
        var offset: UInt16
        var size: Int
        var index: [(position: UInt32, block: UInt32, name: [UInt8])]
    }

    /// A directory's entries in runs behind headers. A run ends after 256 entries, where the inodes it points at
    /// move to another metadata block, where an inode number is too far from the run's base for 16 bits, and
    /// where the listing crosses into another directory-table block; a run starting in a new block gets an
    /// index entry, so the kernel looks a name up without reading the listing from its start.
    private mutating func writeListing(_ entries: [Entry], path: String) throws(SquashfsError) -> Listing {
        let start = directories.uncompressedCount
        guard directories.currentBlockStart <= UInt64(UInt32.max) else {
            throw .tooLarge(field: "the directory table's size", path: path, value: directories.currentBlockStart, limit: UInt64(UInt32.max))
        }
        var listing = Listing(block: UInt32(directories.currentBlockStart), offset: UInt16(directories.offsetInBlock), size: 0, index: [])
        var lastBlock = directories.currentBlockStart
        var first = 0
        while first < entries.count {
            let inodeBlock = entries[first].reference >> 16
            let base = entries[first].number
            let blockNumber = directories.uncompressedCount / SquashfsFormat.metadataBlockSize
            var position = directories.uncompressedCount + 12
            var end = first
            while end < entries.count, end - first < SquashfsFormat.entriesPerDirectoryHeader {
                let delta = Int64(entries[end].number) - Int64(base)
                guard entries[end].reference >> 16 == inodeBlock, delta >= Int64(Int16.min), delta <= Int64(Int16.max),
                    end == first || position / SquashfsFormat.metadataBlockSize == blockNumber
                else { break }
                position += 8 + entries[end].name.count
                end += 1
            }
            guard inodeBlock <= UInt64(UInt32.max), directories.currentBlockStart <= UInt64(UInt32.max) else {
                throw .tooLarge(field: "the inode table's size", path: path, value: inodeBlock, limit: UInt64(UInt32.max))
            }
            if directories.currentBlockStart != lastBlock {
                listing.index.append(
                    (UInt32(directories.uncompressedCount - start), UInt32(directories.currentBlockStart), entries[first].name))
                lastBlock = directories.currentBlockStart
            }
            var bytes: [UInt8] = []
            bytes.appendLE(UInt32(end - first - 1))
            bytes.appendLE(UInt32(inodeBlock))
            bytes.appendLE(base)
            for entry in entries[first..<end] {
                bytes.appendLE(UInt16(entry.reference & 0xFFFF))
                bytes.appendLE(Int16(Int64(entry.number) - Int64(base)))
                bytes.appendLE(entry.type.rawValue)
                bytes.appendLE(UInt16(entry.name.count - 1))
                bytes += entry.name
            }
            directories.append(bytes)
            first = end
        }
        listing.size = directories.uncompressedCount - start
        return listing
    }

    private mutating func writeInode(_ node: ImageTree.Node) throws(SquashfsError) -> UInt64 {
        let number = walk.numbers[node.ino]!
        let links = walk.names[node.ino] ?? 1
        let xattr = xattrs.id(of: node.xattrs, keep: keepXattr)
        let hasXattr = xattr != SquashfsFormat.noXattr
        let path = walk.paths[node.ino] ?? ""
        var record: [UInt8]
        switch node.kind {
        case .regular, .hardlink:
            let layout = layoutOf[node.ino].map { layouts[$0] } ?? FileLayout()
            let size = UInt64(max(0, node.size))
            let extended = hasXattr || links > 1 || layout.sparseBytes > 0 || layout.start > UInt64(UInt32.max) || size > UInt64(UInt32.max)
            record = try header(node, type: .file, extended: extended, number: number)
            if extended {
                record.appendLE(layout.start)
                record.appendLE(size)
                record.appendLE(layout.sparseBytes)
                record.appendLE(links)
                record.appendLE(layout.fragment)
                record.appendLE(layout.fragmentOffset)
                record.appendLE(xattr)
            } else {
                record.appendLE(UInt32(layout.start))
                record.appendLE(layout.fragment)
                record.appendLE(layout.fragmentOffset)
                record.appendLE(UInt32(size))
            }
            for size in layout.blockSizes { record.appendLE(size) }
        case .symlink(let target):
            let bytes = Array(target.utf8)
            guard bytes.count <= 4096 else {
                throw .tooLarge(field: "a symbolic link's target length", path: path, value: UInt64(bytes.count), limit: 4096)
            }
            record = try header(node, type: .symlink, extended: hasXattr, number: number)
            record.appendLE(links)
            record.appendLE(UInt32(bytes.count))
            record += bytes
            if hasXattr { record.appendLE(xattr) }
        case .characterDevice(let major, let minor), .blockDevice(let major, let minor):
            guard major <= 0xFFF, minor <= 0xF_FFFF else {
                throw .tooLarge(field: "a device number", path: path, value: UInt64(max(major, minor)), limit: 0xF_FFFF)
            }
            let type: SquashfsFormat.InodeType = if case .blockDevice = node.kind { .blockDevice } else { .characterDevice }
            record = try header(node, type: type, extended: hasXattr, number: number)
            record.appendLE(links)
            record.appendLE((minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12))
            if hasXattr { record.appendLE(xattr) }
        case .fifo:
            record = try header(node, type: .fifo, extended: hasXattr, number: number)
            record.appendLE(links)
            if hasXattr { record.appendLE(xattr) }
        case .directory:
            preconditionFailure("directories are written by writeDirectory")
        }
        return append(record, for: node.ino, number: number)
    }

    private mutating func append(_ record: [UInt8], for ino: UInt64, number: UInt32) -> UInt64 {
        let reference = inodes.reference
        inodes.append(record)
        references[ino] = reference
        exportReferences[Int(number) - 1] = reference
        return reference
    }

    private mutating func header(_ node: ImageTree.Node, type: SquashfsFormat.InodeType, extended: Bool, number: UInt32) throws(SquashfsError) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(64)
        bytes.appendLE(extended ? type.extended : type.rawValue)
        bytes.appendLE(UInt16(node.permissions & 0o7777))
        bytes.appendLE(try id(node.uid, node))
        bytes.appendLE(try id(node.gid, node))
        bytes.appendLE(UInt32(clamping: node.mtime))
        bytes.appendLE(number)
        return bytes
    }

    private mutating func id(_ value: UInt32, _ node: ImageTree.Node) throws(SquashfsError) -> UInt16 {
        if let index = idIndex[value] { return index }
        guard ids.count < SquashfsFormat.maxIDs else {
            throw .tooLarge(
                field: "the number of distinct owners", path: walk.paths[node.ino] ?? "", value: UInt64(ids.count + 1), limit: UInt64(SquashfsFormat.maxIDs))
        }
        let index = UInt16(ids.count)
        ids.append(value)
        idIndex[value] = index
        return index
    }

    static func basicType(_ node: ImageTree.Node) -> SquashfsFormat.InodeType {
        switch node.kind {
        case .directory: .directory
        case .regular, .hardlink: .file
        case .symlink: .symlink
        case .blockDevice: .blockDevice
        case .characterDevice: .characterDevice
        case .fifo: .fifo
        }
    }
}
