import ContentStore
import Foundation
import LazyFS

#if canImport(Glibc)
import Glibc
#endif

/// The scratch directory of one `slipway run`: `<store>/run/<container id>/`, on the store's filesystem so the
/// overlay's upper and work directories sit beside the layer cache. It holds the bundle (`config.json`), the
/// rootfs mountpoint, the overlay's upper/work directories and any lower mounts, and is removed at the end with
/// everything mounted under it unmounted first.
public final class RunDirectory: Sendable {
    public let path: String
    public let containerID: String

    /// Where every run directory of a store lives.
    public static func parent(storeRoot: String) -> String { "\(storeRoot)/run" }

    public convenience init(storeRoot: String) throws {
        try ContentStore.makePrivateDirectory(Self.parent(storeRoot: storeRoot))
        let id = "slipway-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        try self.init(path: "\(Self.parent(storeRoot: storeRoot))/\(id)", containerID: id)
    }

    /// A run directory at `path` (created; its parent must exist), for a container named `containerID`.
    public init(path: String, containerID: String) throws {
        self.containerID = containerID
        self.path = path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        try Data("\(getpid()) \(Self.startTime(of: getpid()) ?? "")\n".utf8).write(to: URL(fileURLWithPath: "\(path)/owner"))
    }

    public func sub(_ name: String) -> String { "\(path)/\(name)" }

    /// Creates `name` under the run directory and returns its path.
    public func makeDirectory(_ name: String, mode: Int = 0o755) throws -> String {
        let directory = sub(name)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: mode])
        return directory
    }

    /// Unmounts whatever is still mounted under the directory and removes it. Nothing is removed below a mount
    /// that could not be unmounted (its content is not ours to delete); those mountpoints are returned.
    @discardableResult
    public func remove() -> [String] {
        let left = Mounts.unmountAll(under: path)
        Self.removeTree(path, skipping: Set(left))
        return left
    }

    /// Removes the run directories of `slipway run` processes that died without cleaning up (killed with
    /// SIGKILL, or the node's power went): their mounts are detached and their files removed. `forEachStale` gets
    /// each stale container id first, to delete the runtime's state of it.
    public static func reapStale(storeRoot: String, forEachStale: (String) async -> Void = { _ in }) async {
        let parent = parent(storeRoot: storeRoot)
        for name in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] where name.hasPrefix("slipway-") {
            let directory = "\(parent)/\(name)"
            guard let owner = try? String(contentsOfFile: "\(directory)/owner", encoding: .utf8) else {
                // A directory without an owner file is a run that died while creating it, or not ours: only
                // remove it when it is old.
                if let modified = (try? FileManager.default.attributesOfItem(atPath: directory))?[.modificationDate] as? Date,
                    modified.timeIntervalSinceNow < -3600
                {
                    removeTree(directory, skipping: Set(Mounts.unmountAll(under: directory)))
                }
                continue
            }
            let fields = owner.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
            guard let pid = fields.first.flatMap({ Int32($0) }) else { continue }
            let alive = kill(pid, 0) == 0 || errno == EPERM
            if alive, fields.count < 2 || startTime(of: pid) == fields[1] { continue }
            await forEachStale(name)
            removeTree(directory, skipping: Set(Mounts.unmountAll(under: directory)))
            // A lazy mount's state file, kept for `slipway status`, names a mount that is gone now.
            try? FileManager.default.removeItem(atPath: MountState.path(forMountpoint: "\(directory)/lower", storeRoot: storeRoot))
        }
    }

    /// The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), which with the pid
    /// identifies a process across pid reuse.
    public static func startTime(of pid: Int32) -> String? { status(of: pid)?.startTime }

    /// The process's state letter (field 3 of /proc/PID/stat: R, S, D, Z…) and start time.
    public static func status(of pid: Int32) -> (state: Character, startTime: String)? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // Fields after the command start at 3 (state); the start time is field 22.
        guard fields.count > 19, let state = fields[0].first else { return nil }
        return (state, String(fields[19]))
    }

    /// Removes a tree without crossing into other filesystems (a mount left under it is skipped, never emptied),
    /// making directories writable where needed (an overlay's work directory is created mode 000).
    public static func removeTree(_ path: String, skipping mountpoints: Set<String> = []) {
        var root = stat()
        guard lstat(path, &root) == 0 else { return }
        removeTree(path, device: root.st_dev, skipping: mountpoints)
    }

    private static func removeTree(_ path: String, device: dev_t, skipping mountpoints: Set<String>) {
        var info = stat()
        guard lstat(path, &info) == 0, !mountpoints.contains(path) else { return }
        if info.st_mode & S_IFMT == S_IFDIR {
            guard info.st_dev == device else { return }
            if access(path, R_OK | W_OK | X_OK) != 0 { chmod(path, 0o700) }
            for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
                removeTree("\(path)/\(name)", device: device, skipping: mountpoints)
            }
            rmdir(path)
        } else {
            unlink(path)
        }
    }
}
