#if canImport(Glibc)
import Glibc
#endif
import OCI

public enum StoreError: Error, Sendable, CustomStringConvertible {
    case io(path: String, operation: String, errno: Int32)
    case notFound(String)
    case corrupt(path: String, reason: String)
    case verification(expected: Digest, actual: Digest, size: Int64)
    case busy(String)

    public var description: String {
        switch self {
        case .io(let path, let operation, let code):
            return "\(operation) \(path): \(String(cString: strerror(code)))"
        case .notFound(let what): return "\(what) not found in the store"
        case .corrupt(let path, let reason): return "store file \(path) is damaged: \(reason)"
        case .verification(let expected, let actual, let size):
            return "content does not match its digest: expected \(expected), got \(actual) (\(size) bytes); discarded"
        case .busy(let what): return what
        }
    }
}
