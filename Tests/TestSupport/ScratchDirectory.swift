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

    /// A test that failed half way may leave what it started inside: mount processes serving directories here
    /// (they outlive their parents by design) and their mounts. They go first, or the removal stops at the first
    /// read-only mount and the processes live on.
    deinit {
        killProcesses(naming: path + "/")
        detachMounts(under: path + "/")
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// SIGKILLs every process whose command line has an argument under `prefix`.
private func killProcesses(naming prefix: String) {
    let own = getpid()
    for process in runningProcesses() where process.pid != own && process.arguments.contains(where: { $0.hasPrefix(prefix) }) {
        kill(process.pid, SIGKILL)
    }
}

/// The processes on this machine with their command lines, from /proc.
public func runningProcesses() -> [(pid: pid_t, arguments: [String])] {
    ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry in
        guard let pid = pid_t(entry), let raw = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { return nil }
        return (pid, raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) })
    }
}

/// Detaches every mount under `prefix`, deepest first.
private func detachMounts(under prefix: String) {
    let table = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
    // Field 5 is the mount point; the paths tests make have nothing mountinfo would escape.
    let mountpoints = table.split(separator: "\n").compactMap { line -> String? in
        let fields = line.split(separator: " ")
        return fields.count > 4 && fields[4].hasPrefix(prefix) ? String(fields[4]) : nil
    }
    for mountpoint in mountpoints.sorted(by: { $0.count > $1.count }) { umount2(mountpoint, Int32(MNT_DETACH)) }
}
