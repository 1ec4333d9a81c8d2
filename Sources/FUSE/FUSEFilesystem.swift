#if canImport(Glibc)
import Glibc
#endif

/// A read-only filesystem served through the libfuse low-level API by `FUSEMount`.
///
/// **Threads.** Every method is called synchronously on one of libfuse's worker threads (plain pthreads,
/// at most `FUSEMount.maxThreads` at a time), never on a Swift concurrency thread. Methods may block,
/// e.g. on network I/O; each blocked call holds one worker, so the number of workers bounds how many
/// requests are in flight. Methods are called concurrently, also for the same inode, so an
/// implementation must be thread-safe. Never call `FUSEMount.waitUntilUnmounted()` from a callback.
///
/// **Errors.** Throw `FUSEError` (or Foundation's `POSIXError`) to answer with that errno; any other
/// error is answered with `EIO`. Never trap: a crash in a callback kills the whole mount, which is then
/// left as "Transport endpoint is not connected" until `FUSEMount.forceUnmount(_:)` cleans it.
///
/// **Inodes.** Inode numbers are the FUSE node ids and `st_ino`. The root directory is inode 1
/// (`FUSEMount.rootInode`); 0 is invalid. A hard link is the same inode under several names.
///
/// **Caching.** The binding assumes the content never changes while mounted: file data is kept in the
/// kernel page cache across opens (`keep_cache`), symlink targets and directory listings are cached by
/// the kernel as well. Attributes and names are cached for the timeouts given here.
public protocol FUSEFilesystem: AnyObject, Sendable {
    /// Resolves `name` in directory `parent`. Throw `FUSEError.notFound` if there is no such entry.
    /// Each successful lookup counts one reference the kernel later returns through `forget`.
    func lookup(parent: UInt64, name: [UInt8]) throws -> FUSEEntry

    /// The attributes of `ino`; the kernel caches them for `attributeTimeout` seconds.
    func getattr(_ ino: UInt64) throws -> FUSEAttributes

    /// The target of symlink `ino` (raw bytes, no NUL). Default: `EINVAL`.
    func readlink(_ ino: UInt64) throws -> [UInt8]

    /// Opens `ino` with the `open(2)` `flags` and returns a file handle passed back to `read` and
    /// `release`. The reply always sets `keep_cache`, so the kernel keeps cached pages across opens.
    /// Default: handle 0, and `EROFS` if the file is opened for writing.
    func open(_ ino: UInt64, flags: Int32) throws -> UInt64

    /// Reads up to `buffer.count` bytes at `offset` into `buffer` and returns how many were written.
    /// Fewer bytes than asked (0 at or after the end) means end of file. The buffer belongs to the binding
    /// and is only valid during the call; it is sent to the kernel right after the call returns.
    func read(_ ino: UInt64, fh: UInt64, offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int

    /// An open descriptor of a local file holding exactly the content of `ino` (the binding closes it), for the
    /// kernel to read the file from directly (FUSE passthrough, where the kernel and the privileges allow it);
    /// nil to serve the file's reads through `read`. Called after `open`. Default: nil.
    func passthroughFile(_ ino: UInt64) -> Int32?

    /// The last close of a handle returned by `open`. Default: nothing.
    func release(_ ino: UInt64, fh: UInt64)

    /// The children of directory `ino`, in a stable order, **without** `.` and `..`: the binding adds
    /// `.` (this directory) and `..` itself. If the list contains a `..` entry, its `ino` is used for the
    /// binding's `..` (otherwise `..` reports `ino`; the kernel does not use that number). Entries named
    /// `.`, `..`, empty, longer than 1024 bytes or containing `/` or NUL are skipped.
    ///
    /// Called once per `opendir`, on the first `readdir` of that handle; the binding pages through
    /// the returned list with directory offsets, so the result is stable for the handle's lifetime.
    func readdir(_ ino: UInt64) throws -> [FUSEDirectoryEntry]

    /// The value of extended attribute `name` (e.g. `user.foo`, `trusted.overlay.opaque`) of `ino`.
    /// The binding answers size probes and returns `ERANGE` for short buffers.
    /// Default: `ENODATA` (no such attribute).
    func getxattr(_ ino: UInt64, name: [UInt8]) throws -> [UInt8]

    /// The names of the extended attributes of `ino` (without NUL terminators). Default: none.
    func listxattr(_ ino: UInt64) throws -> [[UInt8]]

    /// What `statfs(2)`/`df` report. Default: `FUSEFilesystemStatistics()` (all zero, 4 KiB blocks).
    func statfs() throws -> FUSEFilesystemStatistics

    /// The kernel dropped `nlookup` references to `ino` (see `lookup`). Default: nothing, which suits
    /// a filesystem whose inodes live as long as the mount.
    func forget(_ ino: UInt64, nlookup: UInt64)

    /// Seconds the kernel may cache the attributes a `getattr` returns. Default: 1.
    var attributeTimeout: Double { get }

    /// When `lookup` throws `ENOENT` and this is > 0, the binding answers with a negative entry the
    /// kernel caches for this many seconds (so repeated misses, e.g. library search paths, are not
    /// asked again). Default: 0 (no negative caching).
    var negativeEntryTimeout: Double { get }
}

extension FUSEFilesystem {
    public func readlink(_ ino: UInt64) throws -> [UInt8] {
        throw FUSEError.invalidArgument
    }

    public func open(_ ino: UInt64, flags: Int32) throws -> UInt64 {
        guard flags & O_ACCMODE == O_RDONLY else { throw FUSEError.readOnlyFilesystem }
        return 0
    }

    public func release(_ ino: UInt64, fh: UInt64) {}

    public func passthroughFile(_ ino: UInt64) -> Int32? { nil }

    public func getxattr(_ ino: UInt64, name: [UInt8]) throws -> [UInt8] {
        throw FUSEError.noData
    }

    public func listxattr(_ ino: UInt64) throws -> [[UInt8]] {
        []
    }

    public func statfs() throws -> FUSEFilesystemStatistics {
        FUSEFilesystemStatistics()
    }

    public func forget(_ ino: UInt64, nlookup: UInt64) {}

    public var attributeTimeout: Double { 1 }

    public var negativeEntryTimeout: Double { 0 }
}
