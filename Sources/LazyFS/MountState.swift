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
    /// Of the lazy layers, those served through a gzip index (the others are eStargz).
    public var indexedLayers: Int?
    public var wholeLayers: Int
    public var files: Int
    public var statistics: MountStatistics
    /// Incremented at every write, so a reader that asked for a fresh state (SIGUSR1) sees when it arrived.
    public var sequence = 0
    /// Which boot and which process start wrote the state: a state file outlives a reboot, and its pid may then
    /// name an unrelated process, which must not be signalled.
    public var bootID: String?
    public var processStart: UInt64?
    /// For a mount of one layer (`--layer`): the layer, its TOC digest as verified, so a snapshotter reuses the
    /// mount only for the same layer and TOC.
    public var layer: String?
    public var tocDigest: String?
    /// Files of the image's start-up profile that the prefetch fetches first (those the image has).
    public var profileFiles: Int?

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
        bootID = Self.currentBootID
        processStart = Self.startTime(of: pid)
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
        if let bootID, bootID != Self.currentBootID { return false }
        guard let fields = Self.statFields(of: pid) else { return true }
        if let processStart, fields.count > 19, UInt64(fields[19]) != processStart { return false }
        return fields.first != "Z"
    }

    /// The fields of /proc/PID/stat after "PID (COMMAND)" (the command may hold spaces and parentheses): the
    /// state first, the start time (in clock ticks since boot) 20th.
    private static func statFields(of pid: Int32) -> [Substring]? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let end = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: end)...].split(separator: " ")
    }

    static func startTime(of pid: Int32) -> UInt64? {
        guard let fields = statFields(of: pid), fields.count > 19 else { return nil }
        return UInt64(fields[19])
    }

    static let currentBootID = (try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8))?
        .trimmingCharacters(in: .whitespacesAndNewlines)
}
