/// Why a squashfs could not be written.
public enum SquashfsError: Error, CustomStringConvertible, Equatable {
    /// The tree needs more than a field of the format holds (`field`, the value it needed, the format's limit).
    case tooLarge(field: String, path: String, value: UInt64, limit: UInt64)
    /// A file's bytes are not on this machine (a lazily mounted layer).
    case notLocal(path: String)
    /// Reading a file of the tree or writing the output failed.
    case io(path: String, reason: String)
    case invalidOptions(String)

    public var description: String {
        switch self {
        case .tooLarge(let field, let path, let value, let limit):
            "/\(path): \(field) is \(value), more than squashfs can store (at most \(limit))"
        case .notLocal(let path): "/\(path) is not in the layer cache (lazily mounted layers cannot be squashed)"
        case .io(let path, let reason): "\(path): \(reason)"
        case .invalidOptions(let reason): "invalid squashfs options: \(reason)"
        }
    }
}
