#if canImport(Glibc)
import Glibc
#endif

/// An open-file-description lock (`F_OFD_SETLK`) on a lock file. The kernel drops it when the holder dies,
/// including `kill -9`, so a crashed pull never leaves a stale lock; on NFS the server does the same when the
/// client's lease lapses. Waiting polls without blocking a thread, so many waiters cost nothing.
public final class FileLock: @unchecked Sendable {
    // The descriptor is owned by this object alone and closed once.
    private var descriptor: Int32

    public enum Mode: Sendable { case shared, exclusive }

    private init(descriptor: Int32) { self.descriptor = descriptor }

    /// Tries once; nil when another process holds a conflicting lock.
    public static func tryAcquire(_ path: String, mode: Mode) throws -> FileLock? {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw StoreError.io(path: path, operation: "open lock file", errno: errno) }
        var lock = flock()
        lock.l_type = Int16(mode == .exclusive ? F_WRLCK : F_RDLCK)
        lock.l_whence = Int16(SEEK_SET)
        lock.l_start = 0
        lock.l_len = 0
        if fcntl(fd, ofdSetLock, &lock) == 0 { return FileLock(descriptor: fd) }
        let error = errno
        close(fd)
        if error == EAGAIN || error == EACCES { return nil }
        throw StoreError.io(path: path, operation: "lock", errno: error)
    }

    /// Waits until the lock is free. `onWait` runs once if the lock was busy (to tell the user why we wait).
    public static func acquire(_ path: String, mode: Mode, onWait: (() -> Void)? = nil) async throws -> FileLock {
        var announced = false
        var delay: UInt64 = 5_000_000
        while true {
            if let lock = try tryAcquire(path, mode: mode) { return lock }
            if !announced {
                announced = true
                onWait?()
            }
            try await Task.sleep(nanoseconds: delay)
            delay = min(delay * 2, 200_000_000)
        }
    }

    public func release() {
        guard descriptor >= 0 else { return }
        close(descriptor)
        descriptor = -1
    }

    deinit { release() }
}

/// Linux `F_OFD_SETLK` (glibc defines it only under _GNU_SOURCE, which Swift's Glibc module does not set).
private let ofdSetLock: Int32 = 37
