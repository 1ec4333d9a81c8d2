import Blocking
import ContentStore
import Foundation
import LazyFS
import Logging
import OCI
import SIF
import Images

/// What a finished run reports besides the exit code.
public struct RunResult: Sendable {
    /// The container's exit code, or 128+N when it was killed by signal N.
    public var exitCode: Int32
    public var containerID: String
    /// Problems met while cleaning up (each was attempted anyway).
    public var cleanupProblems: [String]
}

/// `slipway run` from an image to an exit code: assemble the root filesystem in a run directory under the store,
/// write the bundle, run the runtime with our stdin/stdout/stderr, then delete the container's state, unmount
/// and remove the run directory. The cleanup runs on every path: success, non-zero exit, signal, error.
public struct ContainerRunner: Sendable {
    public var mode: RootfsMode
    public var runtime: OCIRuntime
    public var configuration: RunConfiguration
    public var store: ContentStore
    public var logger: Logger
    public var progress: ProgressHandler = { _ in }
    /// Receives SIGINT/SIGTERM/SIGHUP for the run; the runtime process becomes its target while it runs.
    public var signals: SignalForwarder?
    /// Tells the user something worth knowing (a read-only root, for instance).
    public var notice: @Sendable (String) -> Void = { _ in }
    /// Called just before the runtime starts (to finish a progress display before the container writes).
    public var willStart: @Sendable () -> Void = {}
    public var lazyOptions = LazyMountOptions()
    /// Seconds between passing a SIGINT/SIGTERM/SIGHUP on to the container and killing it.
    public var stopTimeout: Double = 10

    public init(mode: RootfsMode, runtime: OCIRuntime, configuration: RunConfiguration, store: ContentStore, logger: Logger) {
        self.mode = mode
        self.runtime = runtime
        self.configuration = configuration
        self.store = store
        self.logger = logger
    }

    /// Runs the container. `image` (from any source) is needed by `.unpacked` and `.lazy`; `config` is the image
    /// config's container part (nil for a SIF run without an image, whose command then defaults to the SIF's
    /// /.singularity.d/runscript).
    public func run(image: (any Image)?, config: ImageConfig.ContainerConfig?, name: String = "") async throws
        -> RunResult
    {
        try configuration.validate()
        var runtime = runtime
        // Containers of runs whose Slipway died (kill -9) are stopped and their mounts and files removed.
        await RunDirectory.reapStale(storeRoot: store.root) { id in await runtime.delete(id: id) }
        let directory = try RunDirectory(storeRoot: store.root)
        var problems: [String] = []
        defer {
            let left = directory.remove()
            if !left.isEmpty { logger.error("still mounted after the run: \(left.joined(separator: ", "))") }
        }
        if runtime.identity.isRootless {
            // The runtime's default state directory ($XDG_RUNTIME_DIR) may not exist for this user; keep it private.
            runtime.stateRoot = try directory.makeDirectory("state", mode: 0o700)
        }

        var assembly = RootfsAssembly(mode: mode, directory: directory, store: store, logger: logger, progress: progress)
        assembly.lazyOptions = lazyOptions
        let rootfs = try await assembly.assemble(image: image, name: name)
        rootfs.notes.forEach(notice)
        let outcome: Result<Int32, any Error>
        do {
            outcome = .success(try await run(in: directory, rootfs: rootfs, runtime: runtime, config: config))
        } catch {
            outcome = .failure(error)
        }
        await runtime.delete(id: directory.containerID)
        problems += await rootfs.cleanup()
        let code = try outcome.get()
        return RunResult(exitCode: code, containerID: directory.containerID, cleanupProblems: problems)
    }

    private func run(in directory: RunDirectory, rootfs: AssembledRootfs, runtime: OCIRuntime, config: ImageConfig.ContainerConfig?) async throws
        -> Int32
    {
        try Task.checkCancellation()
        let (configuration, path, readOnly, identity, id) = (configuration, rootfs.path, rootfs.readOnly, runtime.bundleIdentity, directory.containerID)
        // Off the pool: the spec reads the root filesystem (its /etc/passwd, mountpoints), which may be a lazy mount
        // this process serves, whose reads wait for fetches that need the pool.
        let bundle = try await runBlocking {
            var options = configuration
            if config == nil, options.command == nil, options.entrypoint == nil, RootfsPath.exists("/.singularity.d/runscript", in: path) {
                options.command = ["/.singularity.d/runscript"]
            }
            return try RuntimeBundle.write(
                to: directory.path, image: config, options: options, rootfs: path, readOnlyRootfs: readOnly, identity: identity, containerID: id)
        }
        logger.debug("running \(directory.containerID) with \(runtime) from \(bundle.configPath)")
        try Task.checkCancellation()
        willStart()
        return try await runtime.run(bundle: bundle.directory, id: directory.containerID, signals: signals, stopTimeout: stopTimeout)
    }
}

/// The image config a SIF carries: `slipway convert --to sif` (like Apptainer's OCI conversion) stores the OCI
/// container config as the JSON object `oci-config.json`; an OCI-SIF holds the image's config blob.
public enum SIFImageConfig {
    /// The container config stored in the SIF, or nil when it has none.
    public static func read(_ path: String) throws -> ImageConfig.ContainerConfig? {
        let file: SIFFile
        do {
            file = try SIFFile(path: path)
        } catch {
            throw RuntimeError.sifUnavailable("\(path): \(error)")
        }
        if let contents = try OCISIFContents.read(file) { return contents.config.config }
        guard let object = file.object(named: "oci-config.json"), let bytes = try? file.read(object) else { return nil }
        return try? JSONDecoder().decode(ImageConfig.ContainerConfig.self, from: Data(bytes))
    }
}
