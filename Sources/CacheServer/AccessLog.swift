#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// One JSON object per request (time, client, request, status, bytes, duration, what the cache did), for log
/// shippers and `jq`. Written with one `write(2)` per line so lines from concurrent requests never interleave.
public final class AccessLog: Sendable {
    private let descriptor: Int32
    private let ownsDescriptor: Bool

    struct Entry: Encodable {
        var time: String
        var remote: String
        var method: String
        var path: String
        var status: Int
        var bytes: Int64
        var ms: Double
        var cache: String?
        var user: String?
        var error: String?
    }

    /// `path`: a file to append to, or "-" for standard error.
    public init(path: String) throws {
        if path == "-" {
            descriptor = 2
            ownsDescriptor = false
        } else {
            descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
            guard descriptor >= 0 else {
                throw CacheServerError.configuration("cannot open access log \(path): \(String(cString: strerror(errno)))")
            }
            ownsDescriptor = true
        }
    }

    deinit { if ownsDescriptor { close(descriptor) } }

    private static let timeFormat = Mutex({
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }())

    func record(_ entry: Entry) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard var line = try? encoder.encode(entry) else { return }
        line.append(0x0a)
        line.withUnsafeBytes { _ = write(descriptor, $0.baseAddress, $0.count) }
    }

    static func now() -> String { timeFormat.withLock { $0.string(from: Date()) } }
}
