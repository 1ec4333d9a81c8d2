#if canImport(Glibc)
import Glibc
#endif

/// How long a client may take to send its requests and how many connections the server holds at once, so that
/// idle or trickling clients can neither pin file descriptors forever nor crowd out everyone else.
public struct ConnectionLimits: Sendable {
    /// A request (its head and any body) must arrive completely within this time of its first byte.
    public var headerTimeout: Duration = .seconds(10)
    /// A connection waiting for its next request (or its first) is closed after this long without a byte.
    public var idleTimeout: Duration = .seconds(60)
    /// Connections held at once. At the limit a new connection closes the longest idle one; when none is idle it
    /// gets a 503 and is closed.
    public var maxConnections: Int

    public init(maxConnections: Int) {
        self.maxConnections = maxConnections
    }

    /// Defaults for this process's current open-file limit.
    public init() {
        self.init(maxConnections: Self.defaultMaxConnections(fileDescriptorLimit: FileDescriptorLimit.current))
    }

    /// File descriptors kept free of client connections: the listening socket, the event loops' epoll and eventfd
    /// descriptors, log files, and connections being turned away with a 503.
    static let fixedDescriptorReserve = 128

    /// The largest connection count that cannot exhaust `fileDescriptorLimit`: each connection may hold, besides
    /// its socket, a store file it is answering from, a fill's temporary file and that fill's upstream connection.
    public static func defaultMaxConnections(fileDescriptorLimit: Int) -> Int {
        let perConnection = 4
        return min(16384, max(8, (fileDescriptorLimit - fixedDescriptorReserve) / perConnection))
    }
}

/// Failure to read or raise the open-file limit.
public struct FileDescriptorLimitError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

public enum FileDescriptorLimit {
    /// This process's soft RLIMIT_NOFILE (1,024 if it cannot be read).
    public static var current: Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return Int(clamping: limit.rlim_cur)  // RLIM_INFINITY is the largest value: Int.max
    }

    /// Raises this process's soft RLIMIT_NOFILE to its hard limit (servers need many descriptors; the soft limit is
    /// often a historic 1,024) and returns the resulting soft limit.
    public static func raiseSoftLimitToHard() throws -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else {
            throw FileDescriptorLimitError(description: "getrlimit(RLIMIT_NOFILE): \(String(cString: strerror(errno)))")
        }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return Int(clamping: limit.rlim_cur)  // RLIM_INFINITY is the largest value: Int.max
    }
}
