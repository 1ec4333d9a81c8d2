import ArgumentParser
import Blocking
import ContentStore
import Foundation
import Images
import LazyFS
import OCI
import Registry
import Runtime
import Slipway

#if canImport(Glibc)
import Glibc
#endif

/// `slipway slurm …`: what the SPANK plugin (`slurm/spank_slipway.c`) runs on a compute node, and the oci.conf
/// for Slurm's own `--container`.
struct SlurmCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "slurm",
        abstract: "Slurm integration: the SPANK plugin's helpers and an oci.conf for srun --container.",
        subcommands: [SlurmContainer.self, SlurmCleanup.self, SlurmOCIConf.self])
}

/// The container of one job step (or one named container of a job) on one node. The plugin runs it as root,
/// once per node and step; it pulls the image with the user's credentials, builds the root filesystem, creates
/// the namespace-owning container (`SharedMountNamespace`), prints what the tasks need and stays until SIGTERM
/// (or the end of the process it watches), when it removes everything.
struct SlurmContainer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "container",
        abstract: "Prepare a job step's container on this node and keep it until SIGTERM (run as root by the SPANK plugin).",
        discussion: """
            On success it writes NUL-separated records to stdout (supervisor=PID, keeper=PID, workdir=DIR, env=K=V…, \
            ready), closes stdout and logs to STATE/log. A container that already exists at --state with a living \
            supervisor is reused: its records are printed again and nothing is pulled or mounted. The image is always \
            resolved against the registry with the given credentials, so a user who may not pull it cannot run it \
            from the shared store either.
            """,
        shouldDisplay: false)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var decompression: DecompressionOptions
    @Option(help: "The container's directory on this node (node-local, not on NFS: the overlay's upper layer lives there).")
    var state: String
    @Option(help: "The OCI runtime's container id (unique on the node).") var id: String
    @Option(help: "Image reference (optional when reusing a named container).") var image: String?
    @Option(help: "Root filesystem: unpacked, lazy or sif.") var mode: Run.Mode = .unpacked
    @Option(help: "Bind mount SRC:DST[:ro] (repeatable).") var bind: [String] = []
    @Flag(help: "Make the root filesystem read-only.") var readOnly = false
    @Option(help: "Working directory in the container (default: the image's, else /).") var workdir: String?
    @Option(help: "A docker config.json holding the user's credentials (the plugin passes the file the user opened as /dev/fd/N); credential helpers are not run.")
    var authfile: String?
    @Option(help: "End, removing the container, when process PID (with /proc start time START) ends: PID:START.") var watch: String?
    @Option(help: "OCI runtime: runc, crun or a path.") var runtime: String?

    func validate() throws {
        if let image { _ = try parseLocation(image) }
        for text in bind {
            do { _ = try BindMount(parsing: text) } catch { throw ValidationError("\(error)") }
        }
        if let workdir, !workdir.hasPrefix("/") { throw ValidationError("--workdir \(workdir): give an absolute path") }
        if mode == .sif, image == nil { throw ValidationError("--mode sif converts the image: give --image") }
    }

    func run() async throws {
        guard geteuid() == 0 else { throw ValidationError("slipway slurm container runs as root (the SPANK plugin starts it)") }
        let state = resolvedPath(self.state)
        try FileManager.default.createDirectory(
            atPath: (state as NSString).deletingLastPathComponent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let lock = try await FileLock.acquire(state + ".lock", mode: .exclusive)
        defer { lock.release() }

        if let records = StepContainerState.liveRecords(state) {
            let recorded = StepContainerState.image(state)
            if let image, let recorded, recorded != image {
                throw ValidationError("the container at \(state) was made from \(recorded), not \(image); use another --container-name")
            }
            try? FileHandle.standardOutput.write(contentsOf: records)
            return
        }
        let ociRuntime = try OCIRuntime.locate(runtime, identity: .root)
        await StepContainerState.remove(state, runtime: ociRuntime)
        guard let reference = image else { throw ValidationError("no container exists at \(state) yet: give --container-image") }
        let binds = try bind.map { try BindMount(parsing: $0) }
        for bind in binds { try bind.checkSource() }
        let location = try parseLocation(reference)
        let store = try global.openStore()
        let logger = global.makeLogger()
        let credentials = try authfile.map { try DockerConfigCredentials(contents: FileManager.default.contents(atPath: $0), path: $0, runsHelpers: false) }

        let signals = SignalForwarder()
        defer { signals.cancel() }
        let options = global
        let (mode, readOnly, workdir, id, watched) = (self.mode, self.readOnly, self.workdir, self.id, try watch.map(WatchedProcess.init))
        let work = Task {
            try await options.withSession(for: [location], credentials: credentials) { session in
                let directory = try RunDirectory(path: state, containerID: id)
                var rootfs: AssembledRootfs?
                var created = false
                do {
                    let (image, rootfsMode, lazyOptions) = try await Self.resolve(location, reference: reference, mode: mode, session: session, store: store)
                    var assembly = RootfsAssembly(mode: rootfsMode, directory: directory, store: store, logger: logger)
                    assembly.lazyOptions = lazyOptions
                    let assembled = try await assembly.assemble(image: image, name: Puller.storeName(for: location))
                    rootfs = assembled
                    // Off the pool: a read-only lazy root is read through this process's own FUSE mount.
                    try await runBlocking {
                        try RuntimeBundle.writeConfig(
                            try SharedMountNamespace.spec(rootfs: assembled.path, readOnly: readOnly, binds: binds), to: directory.path)
                    }
                    try Task.checkCancellation()
                    created = true
                    let keeper = try await ociRuntime.create(bundle: directory.path, id: id)
                    let config = image.config.config
                    let records = StepContainerState.records(
                        keeper: keeper, workdir: workdir ?? config?.WorkingDir, environment: config?.Env ?? [])
                    try StepContainerState.record(records, image: reference, id: id, in: state)
                    try? FileHandle.standardOutput.write(contentsOf: records)
                    StepContainerState.detachStandardStreams(log: "\(state)/log")
                    lock.release()
                    await Self.wait(for: watched)
                } catch {
                    await Self.remove(created ? id : nil, rootfs: rootfs, directory: directory, runtime: ociRuntime)
                    throw error
                }
                await Self.remove(id, rootfs: rootfs, directory: directory, runtime: ociRuntime)
            }
        }
        signals.setInterruptHandler { _ in work.cancel() }
        try await work.value
    }

    /// The image and how its root filesystem is built in `mode`.
    static func resolve(_ location: ImageLocation, reference: String, mode: Run.Mode, session: Session, store: ContentStore) async throws
        -> (image: any Image, mode: RootfsMode, lazy: LazyMountOptions)
    {
        var lazyOptions = LazyMountOptions()
        switch mode {
        case .unpacked:
            // Always asked of the registry (one HEAD when the store has the image): the store may hold an image this
            // user may not pull.
            return (try await Puller(session: session, store: store).image(location, policy: .newer), .unpacked, lazyOptions)
        case .lazy:
            let image = try await session.source(for: location, backedBy: store).resolve(platform: session.options.platform)
            await lazyOptions.useGzipIndexes(of: image, notice: { _ in })
            return (image, .lazy, lazyOptions)
        case .sif:
            let image = try await Puller(session: session, store: store).image(location, policy: .newer)
            let lease = try await store.lockForWriting()
            defer { lease.release() }
            let report = try await SIFConverter(store: store).convertIntoCache(image, reference: reference)
            return (image, .sif(report.output), lazyOptions)
        }
    }

    /// Deletes the runtime's container, unmounts the root filesystem and removes the directory. It runs in a task of
    /// its own: the supervisor's task is cancelled by then (SIGTERM), which would kill the runtime's `delete`.
    static func remove(_ id: String?, rootfs: AssembledRootfs?, directory: RunDirectory, runtime: OCIRuntime) async {
        await Task {
            if let id { await runtime.delete(id: id) }
            if let rootfs { await rootfs.cleanup() }
            directory.remove()
        }.value
    }

    /// Until the task is cancelled (SIGTERM) or the watched process ends.
    static func wait(for watched: WatchedProcess?) async {
        while !Task.isCancelled {
            if let watched, !watched.isAlive { return }
            try? await Task.sleep(for: .seconds(1))
        }
    }
}

/// A process identified by pid and start time, so that a reused pid does not count as it.
struct WatchedProcess: Sendable {
    var pid: pid_t
    var startTime: String

    init(_ text: String) throws {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        guard let pid = parts.first.flatMap({ pid_t($0) }), pid > 0 else { throw ValidationError("--watch \(text): the form is PID:START") }
        self.pid = pid
        startTime = parts.count > 1 ? parts[1] : (RunDirectory.startTime(of: pid) ?? "")
    }

    /// Running, and not a zombie: a supervisor's parent is init once it detached, and init may take a second to
    /// reap it.
    var isAlive: Bool {
        guard let status = RunDirectory.status(of: pid), status.startTime == startTime else { return false }
        return status.state != "Z" && status.state != "X"
    }
}

/// What a step container's directory holds besides the run directory's own files: `records` (what the plugin
/// reads), `image` (the reference it was made from) and `id` (the runtime's container id).
enum StepContainerState {
    static func records(keeper: pid_t, workdir: String?, environment: [String]) -> Data {
        var fields = ["supervisor=\(getpid())", "keeper=\(keeper)", "workdir=\(workdir.flatMap { $0.isEmpty ? nil : $0 } ?? "/")"]
        fields += environment.filter { $0.contains("=") && !$0.hasPrefix("=") }.map { "env=\($0)" }
        fields.append("ready")
        return Data(fields.joined(separator: "\0").utf8 + [0])
    }

    static func record(_ records: Data, image: String, id: String, in state: String) throws {
        try Data(image.utf8).write(to: URL(fileURLWithPath: "\(state)/image"))
        try Data(id.utf8).write(to: URL(fileURLWithPath: "\(state)/id"))
        try records.write(to: URL(fileURLWithPath: "\(state)/records"), options: .atomic)
    }

    static func image(_ state: String) -> String? { try? String(contentsOfFile: "\(state)/image", encoding: .utf8) }

    /// The records of a container whose supervisor still runs.
    static func liveRecords(_ state: String) -> Data? {
        guard let records = FileManager.default.contents(atPath: "\(state)/records"), let owner = supervisor(state), owner.isAlive else { return nil }
        return records
    }

    /// No living supervisor, and none preparing it (a supervisor holds the lock until its records are out).
    static func isAbandoned(_ state: String) -> Bool {
        if supervisor(state)?.isAlive == true { return false }
        guard let lock = try? FileLock.tryAcquire(state + ".lock", mode: .exclusive) else { return false }
        lock.release()
        return true
    }

    static func supervisor(_ state: String) -> WatchedProcess? {
        guard let owner = try? String(contentsOfFile: "\(state)/owner", encoding: .utf8) else { return nil }
        return try? WatchedProcess(owner.split(whereSeparator: { $0 == " " || $0 == "\n" }).joined(separator: ":"))
    }

    /// Ends the supervisor (SIGTERM, then SIGKILL after `grace` seconds) and removes whatever it left: the runtime's
    /// container, mounts, files.
    static func remove(_ state: String, runtime: OCIRuntime?, grace: Double = 20) async {
        guard FileManager.default.fileExists(atPath: state) else { return }
        if let owner = supervisor(state), owner.isAlive {
            kill(owner.pid, SIGTERM)
            let deadline = ContinuousClock.now + .seconds(grace)
            while owner.isAlive, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(50)) }
            if owner.isAlive {
                kill(owner.pid, SIGKILL)
                while owner.isAlive { try? await Task.sleep(for: .milliseconds(50)) }
            }
        }
        if let id = try? String(contentsOfFile: "\(state)/id", encoding: .utf8), let runtime { await runtime.delete(id: id) }
        RunDirectory.removeTree(state, skipping: Set(Mounts.unmountAll(under: state)))
    }

    /// After the records are out: stdout to /dev/null (the plugin reads it to its end), stderr to the log.
    static func detachStandardStreams(log: String) {
        let null = open("/dev/null", O_WRONLY | O_CLOEXEC)
        if null >= 0 {
            dup2(null, 1)
            close(null)
        }
        let file = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        if file >= 0 {
            dup2(file, 2)
            close(file)
        }
    }
}

/// `slipway slurm cleanup`: ends and removes step containers on this node: one (`--state`), or all of a job's
/// (`--job`, from the plugin's job epilog), or those whose supervisor is gone (`--stale`).
struct SlurmCleanup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cleanup", abstract: "End and remove Slurm step containers on this node (run as root by the SPANK plugin).",
        shouldDisplay: false)

    @Option(help: "One container's directory.") var state: String?
    @Option(help: "The plugin's directory for this node (RUNTIME_PATH/NODE), with --job or --stale.") var nodeDirectory: String?
    @Option(help: "Every container of this job id.") var job: UInt32?
    @Flag(help: "Every container whose supervisor is gone.") var stale = false
    @Option(help: "OCI runtime: runc, crun or a path.") var runtime: String?

    func validate() throws {
        guard state != nil || (nodeDirectory != nil && (job != nil || stale)) else {
            throw ValidationError("give --state DIR, or --node-directory DIR with --job ID or --stale")
        }
    }

    func run() async throws {
        let ociRuntime = try? OCIRuntime.locate(runtime, identity: .root)
        var targets: [String] = []
        if let state { targets.append(resolvedPath(state)) }
        if let nodeDirectory {
            let node = resolvedPath(nodeDirectory)
            let jobs = (try? FileManager.default.contentsOfDirectory(atPath: node)) ?? []
            for name in jobs where name.hasPrefix("job-") && !name.hasSuffix(".lock") {
                let jobDirectory = "\(node)/\(name)"
                let all = job.map { name == "job-\($0)" } ?? false
                // A lock file alone is what a supervisor that failed, or died with its slurmstepd, leaves.
                let names = Set((try? FileManager.default.contentsOfDirectory(atPath: jobDirectory)) ?? [])
                for entry in names {
                    let container = entry.hasSuffix(".lock") ? String(entry.dropLast(".lock".count)) : entry
                    if entry.hasSuffix(".lock"), names.contains(container) { continue }
                    let path = "\(jobDirectory)/\(container)"
                    if all || (stale && StepContainerState.isAbandoned(path)) { targets.append(path) }
                }
            }
        }
        for target in targets {
            await StepContainerState.remove(target, runtime: ociRuntime)
            try? FileManager.default.removeItem(atPath: target + ".lock")
            // The job's directory goes with its last container.
            let parent = (target as NSString).deletingLastPathComponent
            if (try? FileManager.default.contentsOfDirectory(atPath: parent))?.isEmpty == true { rmdir(parent) }
        }
    }
}

/// `slipway slurm oci-conf`: an oci.conf for Slurm 22.05's `--container=BUNDLE`, through the runtime Slipway picks.
struct SlurmOCIConf: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "oci-conf",
        abstract: "Print an oci.conf (beside slurm.conf) that runs srun --container=BUNDLE through runc or crun, as Slipway picks them.",
        discussion: """
            Slurm 22.05 runs these commands as the job's user (rootless), with the bundle at the same path on every \
            node: make bundles with `slipway bundle REF DIR` on a shared filesystem.
            """)

    @Option(help: "OCI runtime: runc, crun or a path (default: Slipway's choice for this host).") var runtime: String?

    func run() throws {
        let chosen = try OCIRuntime.locate(runtime, identity: .rootless(hostUID: 0, hostGID: 0))
        let base = "\(chosen.executable) --rootless=true --root=/tmp/slipway-oci"
        let id = "%n.%u.%j.%s.%t"
        print(
            """
            # oci.conf for Slurm's --container=BUNDLE, written by `slipway slurm oci-conf` (runtime: \(chosen.kind.rawValue)).
            # Slurm runs these as the job's user; the bundle must exist at the same path on every node.
            RunTimeQuery="\(base) state \(id)"
            RunTimeKill="\(base) kill -a \(id)"
            RunTimeDelete="\(base) delete --force \(id)"
            RunTimeRun="\(base) run --bundle %b \(id)"
            """)
    }
}
