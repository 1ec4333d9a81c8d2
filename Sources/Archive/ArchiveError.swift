#if canImport(Glibc)
import Glibc
#endif

/// Errors raised while reading, decompressing or extracting layer archives.
public struct ArchiveError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// An entry name (or whiteout) would resolve outside the extraction root.
        case pathTraversal(entry: String)
        /// A hard link whose target lies outside the root or does not exist.
        case linkEscape(entry: String, target: String)
        /// The archive (or its compressed stream) ended in the middle of an entry/member.
        case truncated(detail: String)
        /// The compressed stream is invalid; `offset` is the compressed byte offset where decoding failed.
        case corruptCompressedData(format: String, offset: Int64, detail: String)
        /// A tar header failed to parse (bad checksum, bad number, bad PAX record).
        case invalidHeader(offset: Int64, detail: String)
        /// Entry type the extractor refuses to handle (e.g. GNU sparse, volume labels).
        case unsupportedEntryType(entry: String, type: String)
        /// A whiteout entry that is malformed (`.wh..`, `.wh.`, names with `/`).
        case invalidWhiteout(entry: String)
        /// A system call failed.
        case io(operation: String, path: String, errno: Int32)
        /// A resource limit of the extractor was exceeded (PAX header too large, symlink loop...).
        case limitExceeded(detail: String)
        /// A layer decodes to more than its decompression limit allows (a decompression bomb, or a limit set too low).
        case layerTooLarge(layer: String, limit: Int64, compressedSize: Int64)
    }

    public var kind: Kind

    public init(_ kind: Kind) { self.kind = kind }

    public var description: String {
        switch kind {
        case .pathTraversal(let entry):
            return "archive entry '\(entry)' escapes the extraction root"
        case .linkEscape(let entry, let target):
            return "hard link '\(entry)' -> '\(target)' points outside the root or to a missing file"
        case .truncated(let detail):
            return "truncated archive: \(detail)"
        case .corruptCompressedData(let format, let offset, let detail):
            return "corrupt \(format) data at compressed offset \(offset): \(detail)"
        case .invalidHeader(let offset, let detail):
            return "invalid tar header at offset \(offset): \(detail)"
        case .unsupportedEntryType(let entry, let type):
            return "unsupported tar entry type '\(type)' for '\(entry)'"
        case .invalidWhiteout(let entry):
            return "invalid whiteout entry '\(entry)'"
        case .io(let operation, let path, let code):
            return "\(operation) '\(path)' failed: \(String(cString: strerror(code))) (errno \(code))"
        case .limitExceeded(let detail):
            return "limit exceeded: \(detail)"
        case .layerTooLarge(let layer, let limit, let compressedSize):
            return "layer \(layer) decompresses to more than \(limit) bytes, the limit for a \(compressedSize)-byte blob; "
                + "if the image is trusted, raise the limit with --max-layer-size SIZE and --max-expansion RATIO "
                + "(or SLIPWAY_MAX_LAYER_SIZE / SLIPWAY_MAX_EXPANSION)"
        }
    }

    static func io(_ operation: String, _ path: String, _ code: Int32 = errno) -> ArchiveError {
        ArchiveError(.io(operation: operation, path: path, errno: code))
    }
}
