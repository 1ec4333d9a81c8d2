/// Failures of a snapshot operation, in the classes containerd tells apart (its `errdefs`, carried as gRPC
/// status codes): a caller such as containerd's unpacker acts on the class, e.g. skips a layer on
/// `alreadyExists`.
public enum SnapshotError: Error, Equatable, CustomStringConvertible {
    case notFound(String)
    case alreadyExists(String)
    /// The snapshot is not in the state the operation needs (committing a view, removing a parent).
    case failedPrecondition(String)
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .notFound(let what): return "snapshot \(what): not found"
        case .alreadyExists(let what): return "snapshot \(what): already exists"
        case .failedPrecondition(let why): return why
        case .invalidArgument(let why): return why
        }
    }
}
