/// The numbers of the squashfs 4.0 format this writer uses (squashfs-tools-ng doc/format.adoc; the kernel's
/// fs/squashfs). Everything on disk is little-endian.
enum SquashfsFormat {
    static let magic: UInt32 = 0x7371_7368
    static let superblockSize = 96
    static let metadataBlockSize = 8192
    /// Set in a metadata block's 16-bit header when the block is stored uncompressed.
    static let metadataUncompressed: UInt16 = 0x8000
    /// Set in a data block's or fragment's 32-bit size when it is stored uncompressed.
    static let dataUncompressed: UInt32 = 1 << 24
    static let noFragment: UInt32 = 0xFFFF_FFFF
    static let noXattr: UInt32 = 0xFFFF_FFFF
    static let absentTable: UInt64 = 0xFFFF_FFFF_FFFF_FFFF
    static let compressorGzip: UInt16 = 1
    /// A directory header covers at most 256 entries.
    static let entriesPerDirectoryHeader = 256
    /// The kernel's limit on a name in a directory.
    static let maxNameLength = 256
    static let maxIDs = 65535

    enum Flag {
        static let duplicates: UInt16 = 0x40
        static let exportable: UInt16 = 0x80
        static let noXattrs: UInt16 = 0x200
    }

    /// Basic inode types; the extended form of each is its basic type + 7.
    enum InodeType: UInt16 {
        case directory = 1, file, symlink, blockDevice, characterDevice, fifo, socket

        var extended: UInt16 { rawValue + 7 }
    }

    /// Extended attribute name prefixes squashfs can store, by their type number.
    static let xattrPrefixes: [(prefix: String, type: UInt16)] = [("user.", 0), ("trusted.", 1), ("security.", 2)]
}
