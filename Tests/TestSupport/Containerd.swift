import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Debian's containerd and ctr are installed, and the tests run as root (containerd needs it).
public let containerdAvailable = FileManager.default.isExecutableFile(atPath: "/usr/bin/containerd") && geteuid() == 0

/// A private containerd for one test: its own root, state, socket and config.toml under a scratch directory, and no
/// CRI plugin unless the test drives it (it starts more slowly).
public struct Containerd: Sendable {
    public let socket: String
    public let process: ChildProcess

    /// Starts containerd and returns once it answers on its socket. `configuration` is appended to config.toml
    /// (version 2): a proxy plugin, garbage collection settings, the CRI plugin's settings.
    public static func start(_ scratch: ScratchDirectory, configuration: String = "", cri: Bool = false) async throws -> Containerd {
        let socket = scratch.sub("containerd.sock")
        let config = """
            version = 2
            root = "\(scratch.sub("containerd-root"))"
            state = "\(scratch.sub("containerd-state"))"
            disabled_plugins = \(cri ? "[]" : #"["io.containerd.grpc.v1.cri"]"#)
            [grpc]
              address = "\(socket)"
            \(configuration)
            """
        try config.write(toFile: scratch.sub("containerd.toml"), atomically: true, encoding: .utf8)
        let containerd = Containerd(socket: socket, process: try ChildProcess("/usr/bin/containerd", ["--config", scratch.sub("containerd.toml")]))
        do {
            try await waitUntil("containerd answers on \(socket)", interval: .milliseconds(100)) {
                if let status = containerd.process.endedStatus {
                    throw TestSupportError("containerd exited \(status): \(containerd.process.standardErrorSoFar)")
                }
                guard FileManager.default.fileExists(atPath: socket) else { return false }
                return try await containerd.ctr(["version"]).status == 0
            }
        } catch {
            await containerd.stop()
            throw error
        }
        return containerd
    }

    /// Runs ctr against this containerd.
    @discardableResult
    public func ctr(_ arguments: [String]) async throws -> ProcessResult {
        try await run("ctr", ["--address", socket] + arguments)
    }

    /// Stops containerd (SIGTERM) and waits for it to end.
    public func stop() async {
        process.signal(SIGTERM)
        await process.exitStatus()
    }
}
