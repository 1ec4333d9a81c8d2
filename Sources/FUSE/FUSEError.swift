#if canImport(Glibc)
import Glibc
#endif

/// An error a filesystem callback throws to answer a request with an errno.
///
/// Whatever a callback throws is turned into `fuse_reply_err`: a `FUSEError` gives its `errno`,
/// Foundation's `POSIXError` gives its code, and any other error gives `EIO`.
public struct FUSEError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A positive errno value such as `ENOENT`.
    public let errno: Int32

    public init(_ errno: Int32) {
        self.errno = errno
    }

    public init(errno: Int32) {
        self.errno = errno
    }

    public static let notFound = FUSEError(ENOENT)
    public static let io = FUSEError(EIO)
    public static let notDirectory = FUSEError(ENOTDIR)
    public static let isDirectory = FUSEError(EISDIR)
    /// `ENODATA`: no such extended attribute.
    public static let noData = FUSEError(ENODATA)
    /// `ERANGE`: a buffer is too small.
    public static let range = FUSEError(ERANGE)
    /// `ENOSYS`: the operation is not implemented. For xattr calls the kernel then stops asking.
    public static let notImplemented = FUSEError(ENOSYS)
    public static let invalidArgument = FUSEError(EINVAL)
    public static let permissionDenied = FUSEError(EACCES)
    public static let notPermitted = FUSEError(EPERM)
    public static let readOnlyFilesystem = FUSEError(EROFS)
    public static let badFileHandle = FUSEError(EBADF)
    public static let nameTooLong = FUSEError(ENAMETOOLONG)
    public static let outOfMemory = FUSEError(ENOMEM)
    public static let timedOut = FUSEError(ETIMEDOUT)
    public static let interrupted = FUSEError(EINTR)
    public static let notSupported = FUSEError(EOPNOTSUPP)

    public var description: String {
        guard let text = strerror(errno) else { return "errno \(errno)" }
        return "\(String(cString: text)) (errno \(errno))"
    }
}

/// A failure to mount, run or unmount a FUSE session (as opposed to a per-request `FUSEError`).
public struct FUSEMountError: Error, Sendable, CustomStringConvertible {
    /// What failed, e.g. "cannot mount /mnt/x".
    public let message: String
    /// The errno behind the failure, when there is one.
    public let errno: Int32?

    public init(_ message: String, errno: Int32? = nil) {
        self.message = message
        self.errno = errno
    }

    public var description: String {
        guard let errno else { return message }
        return "\(message): \(FUSEError(errno))"
    }
}
