import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A fresh directory for one test, removed with everything in it when the value goes away. Mode 0755, not
/// mkdtemp's 0700: tests run commands as other users (nobody) on what they create inside.
public final class ScratchDirectory: Sendable {
    public let path: String

    public init() throws {
        // A path without "//": the mount table and the kernel speak canonical paths, and tests compare with them.
        var template = Array((FileManager.default.temporaryDirectory.standardizedFileURL.path + "/slipway-test-XXXXXX").utf8CString)
        guard let created = mkdtemp(&template) else { throw TestSupportError("mkdtemp: \(String(cString: strerror(errno)))") }
        path = String(cString: created)
        chmod(path, 0o755)
    }

    /// `name` under the directory.
    public func sub(_ name: String) -> String { "\(path)/\(name)" }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}
