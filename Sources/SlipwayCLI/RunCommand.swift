import ArgumentParser
import ContentStore
import Foundation
import Images
import LazyFS
import OCI
import Runtime
import Slipway

#if canImport(Glibc)
import Glibc
#endif

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command in an image through an OCI runtime (runc or crun); exits with the container's exit code.",
        discussion: """
            The root filesystem is assembled under the store (STORE/run/ID) and removed when the container ends, \
            whatever the way it ends: --mode unpacked stacks the store's per-layer cache with kernel overlayfs (each \
            layer extracted once, nothing copied); --mode lazy mounts the image lazily (eStargz layers fetched as \
            read) under an overlay; --mode sif mounts the squashfs partition of a SIF file (--sif FILE; REF is then \
            optional and only supplies the config). As root the container gets a throwaway writable layer; the \
            host's network is shared, and pid, ipc, uts and mount namespaces are its own. Without root the container \
            runs in a user namespace in which you are root, without cgroups: --mode unpacked then extracts a \
            private copy of the image, and the roots of --mode lazy and sif are read-only (and need /dev/fuse).

            SIGINT, SIGTERM and SIGHUP are passed to the container; if it is still running --stop-timeout seconds \
            later (a PID 1 without a handler ignores SIGTERM), it is killed, and Slipway cleans up. This is what \
            `scancel` needs: Slurm sends SIGTERM, then SIGKILL after its KillWait (30 s by default). A container \
            killed by signal N exits 128+N.
            """)

    enum Mode: String, ExpressibleByArgument, CaseIterable { case unpacked, lazy, sif }

    @OptionGroup var global: GlobalOptions
    @OptionGroup var decompression: DecompressionOptions
    @Argument(help: "Image reference or oci:PATH[:NAME] (optional with --mode sif).") var image: String?
    @Option(name: .long, help: "Root filesystem: unpacked (overlay of the layer cache), lazy (lazy mount) or sif (--sif FILE).")
    var mode: Mode?
    @Option(name: .long, help: "The SIF file for --mode sif.") var sif: String?
    @Option(name: .long, help: "OCI runtime: runc, crun, or a path to either (default: crun, or runc where crun cannot run).")
    var runtime: String?
    @Option(name: .long, help: "Bind mount SRC:DST[:ro] (repeatable).") var bind: [String] = []
    @Option(name: .long, help: "Environment variable KEY=VALUE, or KEY to pass this process's value on (skipped if unset, as docker does); repeatable; overrides the image's.")
    var env: [String] = []
    @Option(name: .long, help: "Working directory in the container (default: the image's).") var workdir: String?
    @Option(name: .long, help: "User uid[:gid] or name[:group] (default: the image's).") var user: String?
    @Option(name: .long, help: "Replace the image's entrypoint (an empty string clears it).") var entrypoint: String?
    @Option(name: .long, help: "--mode unpacked: missing (use the store's copy when it has the image, as podman does), always (ask the registry first), newer (use the store's copy when the registry names that image), never.")
    var pull: PullPolicy = .missing
    @Option(name: .long, help: "Seconds from passing on SIGTERM (or SIGINT, SIGHUP) to killing the container; keep it under Slurm's KillWait.")
    var stopTimeout: Double = 10
    @Option(name: .long, help: "--mode lazy: what to fetch before it is read: none, landmark, all.") var prefetch: PrefetchMode = .all
    @Flag(name: .long, help: "--mode lazy: do not look for gzip indexes (plain gzip layers are then pulled whole).") var noIndex = false
    @Option(name: .long, help: "--mode lazy: write the files the command read, in first-access order, to FILE (for convert --prioritize).")
    var record: String?
    @Argument(parsing: .postTerminator, help: "The command and its arguments (after --), replacing the image's Cmd.")
    var command: [String] = []

    var effectiveMode: Mode { mode ?? (sif != nil ? .sif : .unpacked) }

    func validate() throws {
        guard stopTimeout >= 0 else { throw ValidationError("--stop-timeout is a number of seconds, 0 or more") }
        switch effectiveMode {
        case .sif:
            guard sif != nil else { throw ValidationError("--mode sif needs --sif FILE") }
        case .unpacked, .lazy:
            guard image != nil else { throw ValidationError("give an image reference (or --mode sif with --sif FILE)") }
            if sif != nil { throw ValidationError("--sif goes with --mode sif") }
        }
        if record != nil, effectiveMode != .lazy { throw ValidationError("--record needs --mode lazy (it records the lazy mount's reads)") }
        if let image { _ = try parseLocation(image) }
        for text in bind {
            do {
                _ = try BindMount(parsing: text)
            } catch {
                throw ValidationError("\(error)")
            }
        }
    }

    /// `KEY=VALUE` stays as it is; a bare `KEY` takes this process's value, and is left out when it has none, so
    /// `srun slipway run --env SLURM_PROCID …` hands every task its own rank.
    static func resolveEnvironment(_ variables: [String], from host: [String: String]) -> [String] {
        variables.compactMap { variable in
            if variable.contains("=") { return variable }
            return host[variable].map { "\(variable)=\($0)" }
        }
    }

    func run() async throws {
        let configuration = RunConfiguration(
            command: command.isEmpty ? nil : command, entrypoint: entrypoint.map { $0.isEmpty ? [] : [$0] },
            environment: Self.resolveEnvironment(env, from: ProcessInfo.processInfo.environment),
            workingDirectory: workdir, user: user, binds: try bind.map { try BindMount(parsing: $0) })
        // Everything that can be wrong with the options is found before anything is fetched or mounted.
        try configuration.validate()
        let sifPath = sif.map(resolvedPath)
        if let sifPath, !FileManager.default.fileExists(atPath: sifPath) { throw ValidationError("--sif \(sif ?? ""): no such file") }
        let identity = RuntimeIdentity.current
        if identity.isRootless, let restriction = UserNamespaces.unprivilegedRestriction() {
            throw RuntimeError.rootlessUnavailable(restriction)
        }
        let ociRuntime = try OCIRuntime.locate(runtime, identity: identity)
        let location = try image.map(parseLocation)
        let store = try global.openStore()
        let display = global.makeProgress()
        let logger = global.makeLogger()
        let quiet = global.quiet || global.json

        var runner = ContainerRunner(
            mode: runtimeMode(sifPath), runtime: ociRuntime, configuration: configuration, store: store, logger: logger)
        runner.progress = display.handler
        runner.notice = { message in if !quiet { FileHandle.standardError.write(Data("slipway: \(message)\n".utf8)) } }
        runner.willStart = { display.finish() }
        runner.lazyOptions.prefetch = prefetch
        runner.stopTimeout = stopTimeout
        runner.lazyOptions.recordPath = record.map(resolvedPath)
        let signals = SignalForwarder()
        runner.signals = signals
        let mode = effectiveMode
        let options = global
        let pullPolicy = pull

        let useIndex = !noIndex
        let work = Task { [runner] in
            var runner = runner
            return try await options.withSession(for: location.map { [$0] } ?? []) { session in
                var resolved: ResolvedImage?
                var config: ImageConfig.ContainerConfig?
                switch mode {
                case .unpacked:
                    guard let location else { preconditionFailure() }
                    let image = try await Puller(session: session, store: store, progress: display.handler)
                        .image(location, policy: pullPolicy)
                    resolved = image
                    config = image.config.config
                case .lazy:
                    guard let location else { preconditionFailure() }
                    let image = try await session.source(for: location, backedBy: store).resolve(platform: session.options.platform)
                    resolved = image
                    config = image.config.config
                    if useIndex { await runner.lazyOptions.useGzipIndexes(of: image, notice: runner.notice) }
                case .sif:
                    if let location {
                        // The reference only supplies the config; the root filesystem is the SIF's.
                        config = try await session.source(for: location).resolve(platform: session.options.platform).config.config
                    } else if let sifPath {
                        config = try SIFImageConfig.read(sifPath)
                    }
                }
                let name = location.map(Puller.storeName(for:)) ?? ""
                return try await runner.run(image: resolved, config: config, name: name)
            }
        }
        signals.setInterruptHandler { _ in work.cancel() }
        let outcome = await work.result
        signals.cancel()
        display.finish()
        switch outcome {
        case .success(let result):
            for problem in result.cleanupProblems { FileHandle.standardError.write(Data("slipway: cleanup: \(problem)\n".utf8)) }
            if global.json {
                struct Output: Encodable { var containerID: String; var exitCode: Int32 }
                try? printJSON(Output(containerID: result.containerID, exitCode: result.exitCode))
            }
            Glibc.exit(result.exitCode)
        case .failure(let error):
            // Interrupted before the container started: the conventional status of a death by that signal.
            if let number = signals.firstSignal {
                FileHandle.standardError.write(Data("slipway: interrupted (signal \(number)); cleaned up\n".utf8))
                Glibc.exit(128 + number)
            }
            throw error
        }
    }

    private func runtimeMode(_ sifPath: String?) -> RootfsMode {
        switch effectiveMode {
        case .unpacked: return .unpacked
        case .lazy: return .lazy
        case .sif: return .sif(sifPath ?? "")
        }
    }
}

extension Run: DecompressingCommand {}

extension PullPolicy: ExpressibleByArgument {}
