import Blocking
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// One line of /proc/self/mountinfo.
public struct MountInfoEntry: Sendable, Equatable {
    public var mountID: Int
    public var parentID: Int
    public var mountpoint: String
    public var fsType: String
    public var source: String
}

/// Mounting and unmounting, and reading the mount table.
public enum Mounts {
    /// The current mount namespace's table, in mount order.
    public static func table(_ path: String = "/proc/self/mountinfo") -> [MountInfoEntry] {
        guard let data = readProcFile(path) else { return [] }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            guard fields.count >= 10, let separator = fields.firstIndex(of: "-"), separator + 2 < fields.count,
                let id = Int(fields[0]), let parent = Int(fields[1])
            else { return nil }
            return MountInfoEntry(
                mountID: id, parentID: parent, mountpoint: unescape(fields[4]), fsType: fields[separator + 1], source: unescape(fields[separator + 2]))
        }
    }

    /// Reads a /proc file to its end. Its size is 0 and the kernel returns whole lines per read, so one read (what
    /// Foundation does for a file of size 0) may stop short of the end.
    static func readProcFile(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += buffer[0..<count]
        }
        return bytes
    }

    /// Mountpoints at or below `directory`, deepest (last mounted) first: the order to unmount them in.
    public static func mounts(under directory: String, table: [MountInfoEntry] = table()) -> [String] {
        let prefix = directory.hasSuffix("/") ? directory : directory + "/"
        return table.filter { $0.mountpoint == directory || $0.mountpoint.hasPrefix(prefix) }.map(\.mountpoint).reversed()
    }

    /// The filesystem type mounted at `path` (the topmost mount there), if `path` is a mountpoint.
    public static func fsType(at path: String, table: [MountInfoEntry] = table()) -> String? {
        table.last { $0.mountpoint == path }?.fsType
    }

    /// mountinfo escapes space, tab, newline and backslash as octal.
    static func unescape(_ text: String) -> String {
        guard text.contains("\\") else { return text }
        var bytes: [UInt8] = []
        let utf8 = Array(text.utf8)
        var index = 0
        while index < utf8.count {
            if utf8[index] == UInt8(ascii: "\\"), index + 3 < utf8.count,
                let value = UInt8(String(decoding: utf8[(index + 1)...(index + 3)], as: UTF8.self), radix: 8)
            {
                bytes.append(value)
                index += 4
            } else {
                bytes.append(utf8[index])
                index += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Escapes a path for an overlayfs option value (`,` separates options, `:` separates lower directories).
    static func escapeOverlayPath(_ path: String) -> String {
        var result = ""
        for character in path {
            if character == "," || character == ":" || character == "\\" { result.append("\\") }
            result.append(character)
        }
        return result
    }

    /// Mounts a kernel overlay at `target`. `lowers` are topmost first. Without `upper` the overlay is read-only
    /// (and then needs at least two lower directories). Paths under `base` are given relative to it when the
    /// options would not fit in the page the kernel copies (`mount` then runs in `base`).
    public static func overlay(
        lowers: [String], upper: String?, work: String?, at target: String, extraOptions: [String] = [], base: String? = nil
    ) async throws {
        func data(_ path: (String) -> String) -> String {
            var options = ["lowerdir=" + lowers.map { escapeOverlayPath(path($0)) }.joined(separator: ":")]
            if let upper, let work {
                options.append("upperdir=" + escapeOverlayPath(path(upper)))
                options.append("workdir=" + escapeOverlayPath(path(work)))
            }
            return (options + extraOptions).joined(separator: ",")
        }
        let what = "an overlay of \(lowers.count) layer\(lowers.count == 1 ? "" : "s")"
        let absolute = data { $0 }
        if absolute.utf8.count < pageLimit {
            let flags = UInt(upper == nil ? MS_RDONLY : 0)
            guard Glibc.mount("overlay", target, "overlay", flags, absolute) == 0 else {
                throw RuntimeError.mountFailed(what: what, target: target, errno: errno)
            }
            return
        }
        // Relative paths resolve against the mounting process's working directory: mount(8) run in `base`.
        guard let base else { throw RuntimeError.mountFailed(what: what, target: target, errno: E2BIG) }
        let prefix = base.hasSuffix("/") ? base : base + "/"
        let relative = data { $0.hasPrefix(prefix) ? String($0.dropFirst(prefix.count)) : $0 }
        guard relative.utf8.count < pageLimit else { throw RuntimeError.mountFailed(what: what, target: target, errno: E2BIG) }
        try await HelperCommand.run(
            "/bin/mount", ["-t", "overlay", "-o", (upper == nil ? "ro," : "") + relative, "overlay", target], currentDirectory: base)
    }

    /// The kernel copies one page of mount data; stay below it.
    static let pageLimit = 4000

    /// Unmounts `target`; a mount still busy after a few tries is detached (it goes when its last user does).
    /// Returns false when `target` could not be unmounted at all.
    @discardableResult
    public static func unmount(_ target: String) -> Bool {
        for attempt in 0..<5 {
            if umount2(target, 0) == 0 { return true }
            let error = errno
            if error == EINVAL || error == ENOENT { return !isMountpoint(target) }
            guard error == EBUSY else { break }
            usleep(UInt32(20_000 * (attempt + 1)))
        }
        return umount2(target, Int32(MNT_DETACH)) == 0 || !isMountpoint(target)
    }

    public static func isMountpoint(_ path: String) -> Bool { table().contains { $0.mountpoint == path } }

    /// Unmounts everything at or below `directory`, deepest first. Returns the mountpoints that are left.
    @discardableResult
    public static func unmountAll(under directory: String) -> [String] {
        for _ in 0..<3 {
            let present = mounts(under: directory)
            if present.isEmpty { return [] }
            for mountpoint in present { unmount(mountpoint) }
        }
        return mounts(under: directory)
    }
}

/// Runs a helper command (mount, squashfuse, fusermount3) to completion, capturing its output.
enum HelperCommand {
    /// The helper's end is learnt from waitpid and its output goes to files (see `ChildCommand`): a helper that
    /// daemonizes (squashfuse) keeps its inherited descriptors in the background, so a pipe would never end.
    @discardableResult
    static func run(_ executable: String, _ arguments: [String], currentDirectory: String? = nil) async throws -> String {
        var command = [executable] + arguments
        if let currentDirectory { command = ["/usr/bin/env", "-C", currentDirectory] + command }
        let result: ChildCommandResult
        do {
            result = try await ChildCommand(command[0], Array(command.dropFirst())).run()
        } catch {
            throw RuntimeError.spawnFailed(executable, errno: error.errno)
        }
        let text = result.standardOutputText + result.standardErrorText
        guard result.status == 0 else {
            throw RuntimeError.commandFailed(
                command: ([(executable as NSString).lastPathComponent] + arguments).joined(separator: " "), status: result.status, output: text)
        }
        return text
    }

    /// The first of `candidates` that is an executable file, or the name found on PATH.
    static func find(_ name: String, candidates: [String] = []) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        let directories = path.split(separator: ":").map(String.init) + ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        for candidate in candidates + directories.map({ "\($0)/\(name)" }) where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        return nil
    }
}
