import OCI

/// Why a conversion failed, naming the layer or input at fault.
public enum ConvertError: Error, CustomStringConvertible {
    case unreadableList(String)
    case malformedListLine(source: String, line: Int)
    case missingPrioritizedFiles([String])
    case layer(position: Int, digest: Digest, underlying: Error)
    case invalidSource(String)
    case io(path: String, reason: String)

    public var description: String {
        switch self {
        case .unreadableList(let path):
            return "cannot read the prioritized file list \(path)"
        case .malformedListLine(let source, let line):
            return "\(source):\(line): expected a path or a {\"path\": ...} record"
        case .missingPrioritizedFiles(let paths):
            let shown = paths.prefix(5).joined(separator: ", ") + (paths.count > 5 ? " and \(paths.count - 5) more" : "")
            return "prioritized files in no layer of the image: \(shown) (pass --allow-missing to skip them)"
        case .layer(let position, let digest, let underlying):
            return "layer \(position + 1) (\(digest)): \(underlying)"
        case .invalidSource(let reason):
            return reason
        case .io(let path, let reason):
            return "\(path): \(reason)"
        }
    }
}
