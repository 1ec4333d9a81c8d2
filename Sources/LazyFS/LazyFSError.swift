import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Why a lazy mount could not serve something.
public enum LazyFSError: Error, CustomStringConvertible {
    case io(path: String, errno: Int32)
    /// The registry did not deliver a chunk within the fetch timeout.
    case timedOut(what: String, seconds: Double)
    case fetchFailed(what: String, reason: String)
    /// A read the kernel should never send (negative offset or size).
    case invalidRead(what: String)
    case notMounted(String)
    case mountFailed(String)

    public var description: String {
        switch self {
        case .io(let path, let code): return "\(path): \(String(cString: strerror(code)))"
        case .timedOut(let what, let seconds): return "\(what): no answer from the registry within \(seconds) s"
        case .fetchFailed(let what, let reason): return "\(what): \(reason)"
        case .invalidRead(let what): return "\(what): negative offset or size"
        case .notMounted(let path): return "\(path) is not a slipway mount"
        case .mountFailed(let reason): return "mount failed: \(reason)"
        }
    }
}
