import CFuse3

#if canImport(Glibc)
import Glibc
#endif

/// The attributes of one inode, as `stat(2)` reports them through the mount.
///
/// `mode` carries the file-type bits (`S_IFREG`, `S_IFDIR`, `S_IFLNK`, …) and the permission bits.
/// `st_blocks` is derived from `size` (512-byte units); atime and ctime are reported equal to mtime.
public struct FUSEAttributes: Sendable, Hashable {
    /// The inode number; also `st_ino`. The root directory must be 1 (`FUSEMount.rootInode`).
    public var ino: UInt64
    /// File type and permission bits, e.g. `S_IFREG | 0o644`.
    public var mode: UInt32
    public var nlink: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var size: UInt64
    /// The device number of a character or block device (`makedev(major, minor)`); 0 otherwise.
    public var rdev: UInt64
    public var mtimeSeconds: Int64
    /// 0 ..< 1_000_000_000.
    public var mtimeNanoseconds: UInt32
    /// The preferred I/O size reported as `st_blksize` (the kernel rounds it to a power of two).
    public var blksize: UInt32

    public init(
        ino: UInt64,
        mode: UInt32,
        nlink: UInt32 = 1,
        uid: UInt32 = 0,
        gid: UInt32 = 0,
        size: UInt64 = 0,
        rdev: UInt64 = 0,
        mtimeSeconds: Int64 = 0,
        mtimeNanoseconds: UInt32 = 0,
        blksize: UInt32 = 4096
    ) {
        self.ino = ino
        self.mode = mode
        self.nlink = nlink
        self.uid = uid
        self.gid = gid
        self.size = size
        self.rdev = rdev
        self.mtimeSeconds = mtimeSeconds
        self.mtimeNanoseconds = mtimeNanoseconds
        self.blksize = blksize
    }

    /// The `S_IFMT` bits of `mode`.
    public var fileType: UInt32 { mode & 0o170000 }
    public var isDirectory: Bool { fileType == 0o040000 }
    public var isRegularFile: Bool { fileType == 0o100000 }
    public var isSymbolicLink: Bool { fileType == 0o120000 }
}

/// The answer to a lookup: the child's attributes and how long the kernel may cache them.
public struct FUSEEntry: Sendable, Hashable {
    public var attributes: FUSEAttributes
    /// Seconds the kernel may cache `attributes` before asking `getattr` again.
    public var attributeTimeout: Double
    /// Seconds the kernel may cache the name → inode mapping before asking `lookup` again.
    public var entryTimeout: Double

    public init(attributes: FUSEAttributes, attributeTimeout: Double = 1, entryTimeout: Double = 1) {
        self.attributes = attributes
        self.attributeTimeout = attributeTimeout
        self.entryTimeout = entryTimeout
    }
}

/// One child of a directory as `FUSEFilesystem.readdir` returns it.
///
/// `mode` only needs the file-type bits (they become `d_type`); the kernel ignores the rest.
public typealias FUSEDirectoryEntry = (name: [UInt8], ino: UInt64, mode: UInt32)

/// What `statfs(2)` / `df` report for the mount.
public struct FUSEFilesystemStatistics: Sendable, Hashable {
    public var blockSize: UInt64
    public var blocks: UInt64
    public var freeBlocks: UInt64
    public var availableBlocks: UInt64
    public var files: UInt64
    public var freeFiles: UInt64
    public var maximumNameLength: UInt64

    public init(
        blockSize: UInt64 = 4096,
        blocks: UInt64 = 0,
        freeBlocks: UInt64 = 0,
        availableBlocks: UInt64 = 0,
        files: UInt64 = 0,
        freeFiles: UInt64 = 0,
        maximumNameLength: UInt64 = 255
    ) {
        self.blockSize = blockSize
        self.blocks = blocks
        self.freeBlocks = freeBlocks
        self.availableBlocks = availableBlocks
        self.files = files
        self.freeFiles = freeFiles
        self.maximumNameLength = maximumNameLength
    }
}

// MARK: - Conversions to C (never trap: every narrowing conversion truncates or clamps)

extension FUSEAttributes {
    var cStat: stat {
        var st = stat()
        st.st_ino = .init(truncatingIfNeeded: ino)
        st.st_mode = .init(truncatingIfNeeded: mode)
        st.st_nlink = .init(truncatingIfNeeded: nlink)
        st.st_uid = .init(truncatingIfNeeded: uid)
        st.st_gid = .init(truncatingIfNeeded: gid)
        st.st_rdev = .init(truncatingIfNeeded: rdev)
        let clampedSize = min(size, UInt64(Int64.max))
        st.st_size = .init(truncatingIfNeeded: clampedSize)
        st.st_blksize = .init(truncatingIfNeeded: blksize)
        st.st_blocks = .init(truncatingIfNeeded: clampedSize / 512 + (clampedSize % 512 == 0 ? 0 : 1))
        var time = timespec()
        time.tv_sec = .init(truncatingIfNeeded: mtimeSeconds)
        time.tv_nsec = .init(truncatingIfNeeded: min(mtimeNanoseconds, 999_999_999))
        st.st_mtim = time
        st.st_atim = time
        st.st_ctim = time
        return st
    }
}

extension FUSEFilesystemStatistics {
    var cStatvfs: statvfs {
        var st = statvfs()
        st.f_bsize = .init(truncatingIfNeeded: blockSize)
        st.f_frsize = .init(truncatingIfNeeded: blockSize)
        st.f_blocks = .init(truncatingIfNeeded: blocks)
        st.f_bfree = .init(truncatingIfNeeded: freeBlocks)
        st.f_bavail = .init(truncatingIfNeeded: availableBlocks)
        st.f_files = .init(truncatingIfNeeded: files)
        st.f_ffree = .init(truncatingIfNeeded: freeFiles)
        st.f_favail = .init(truncatingIfNeeded: freeFiles)
        st.f_namemax = .init(truncatingIfNeeded: maximumNameLength)
        return st
    }
}

/// A timeout libfuse can convert safely: NaN and negatives become 0, huge values are capped (libfuse
/// itself caps at ULONG_MAX seconds, but converting NaN there is undefined behaviour).
func sanitizedTimeout(_ seconds: Double) -> Double {
    guard seconds.isFinite else { return seconds == .infinity ? 1e15 : 0 }
    return min(max(seconds, 0), 1e15)
}
