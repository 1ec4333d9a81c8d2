import Crypto
import Foundation

/// What a running mount publishes for `slipway status` and `slipway umount`: a small JSON file in the store,
/// rewritten (atomically) every second while the mount lives.
public struct MountState: Codable, Sendable {
    public var mountpoint: String
    public var image: String
    public var manifestDigest: String
    public var pid: Int32
    public var ready: Bool
    /// Set when the mount failed to start.
    public var error: String?
    public var prefetch: PrefetchMode
    public var lazyLayers: Int
    public var wholeLayers: Int
    public var files: Int
    public var statistics: MountStatistics
    /// Incremented at every write, so a reader that asked for a fresh state (SIGUSR1) sees when it arrived.
    public var sequence = 0

    public init(
        mountpoint: String, image: String, manifestDigest: String = "", pid: Int32 = getpid(), ready: Bool = false, error: String? = nil,
        prefetch: PrefetchMode, lazyLayers: Int = 0, wholeLayers: Int = 0, files: Int = 0, statistics: MountStatistics = MountStatistics()
    ) {
        self.mountpoint = mountpoint
        self.image = image
        self.manifestDigest = manifestDigest
        self.pid = pid
        self.ready = ready
        self.error = error
        self.prefetch = prefetch
        self.lazyLayers = lazyLayers
        self.wholeLayers = wholeLayers
        self.files = files
        self.statistics = statistics
    }

    /// The state file of the mount at `mountpoint` (an absolute, resolved path) under `storeRoot`.
    public static func path(forMountpoint mountpoint: String, storeRoot: String) -> String {
        let hash = SHA256.hash(data: Data(mountpoint.utf8)).prefix(8).map { String(format: "%02x", $0) }.joined()
        return "\(storeRoot)/mounts/\(hash).json"
    }

    public static func read(_ path: String) -> MountState? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? JSONDecoder().decode(MountState.self, from: data)
    }

    public func write(to path: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// Asks the mount process for a fresh state and returns it (the last one if the process does not answer soon).
    public static func fresh(_ path: String) async -> MountState? {
        guard let current = read(path), current.ownerAlive else { return read(path) }
        kill(current.pid, SIGUSR1)
        for _ in 0..<100 {
            try? await Task.sleep(for: .milliseconds(10))
            if let next = read(path), next.sequence != current.sequence { return next }
        }
        return read(path)
    }

    /// Whether the process that wrote the state is still running. A zombie is not: a mount process outlives
    /// the command that started it, and its new parent (a container's init) may never reap it.
    public var ownerAlive: Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        // /proc/PID/stat: "PID (COMMAND) STATE ..."; the command may hold spaces and parentheses.
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let end = stat.lastIndex(of: ")")
        else { return true }
        return stat[end...].dropFirst().drop(while: { $0 == " " }).first != "Z"
    }
}
