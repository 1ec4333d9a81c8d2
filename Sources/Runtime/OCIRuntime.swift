import Blocking
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// An OCI runtime binary (runc or crun) and how to invoke it on this host.
public struct OCIRuntime: Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        case runc, crun
        /// The Debian package that installs it.
        public var package: String { rawValue }
    }

    public let kind: Kind
    public let executable: String
    /// Run the runtime in a private mount namespace in which the host's cgroup2 mount at /sys/fs/cgroup/unified is
    /// hidden: crun 1.8 refuses hybrid cgroups ("cgroups in hybrid mode not supported") and then sees a v1 host.
    public var hidesHybridCgroups: Bool
    /// Root on the host, or rootless (a user namespace for the container, no cgroups).
    public var identity: RuntimeIdentity
    /// The runtime's state directory (`--root`); nil for its default.
    public var stateRoot: String?

    public init(kind: Kind, executable: String, hidesHybridCgroups: Bool = false, identity: RuntimeIdentity = .current, stateRoot: String? = nil) {
        self.kind = kind
        self.executable = executable
        self.hidesHybridCgroups = hidesHybridCgroups
        self.identity = identity
        self.stateRoot = stateRoot
    }

    public var description: String { "\(kind.rawValue) (\(executable))\(hidesHybridCgroups ? ", cgroup2 hidden in a private mount namespace" : "")" }

    /// Finds the runtime to use. `requested` is `runc`, `crun` or a path to either (the kind is taken from the file
    /// name); nil picks one: crun where it works, runc on a hybrid-cgroup host where crun refuses to run (crun with
    /// the workaround when runc is missing).
    public static func locate(
        _ requested: String? = nil, identity: RuntimeIdentity = .current, crunRefusesHost: Bool = CgroupLayout.crunRefuses()
    ) throws -> OCIRuntime {
        func make(_ kind: Kind, _ path: String) -> OCIRuntime {
            // Rootless crun always needs the wrapper (its user namespace is where the cgroup2 mount gets covered).
            let hide = kind == .crun && crunRefusesHost
            return OCIRuntime(kind: kind, executable: path, hidesHybridCgroups: hide, identity: identity)
        }
        guard let requested else {
            let order: [Kind] = crunRefusesHost ? [.runc, .crun] : [.crun, .runc]
            for kind in order {
                if let path = HelperCommand.find(kind.rawValue) { return make(kind, path) }
            }
            throw RuntimeError.runtimeNotFound(name: "runc or crun", package: crunRefusesHost ? "runc" : "crun", looked: "PATH")
        }
        if requested.contains("/") {
            let name = (requested as NSString).lastPathComponent
            let kind: Kind = name.contains("crun") ? .crun : .runc
            guard FileManager.default.isExecutableFile(atPath: requested) else {
                throw RuntimeError.runtimeNotFound(name: name, package: kind.package, looked: requested)
            }
            return make(kind, requested)
        }
        guard let kind = Kind(rawValue: requested) else {
            throw RuntimeError.runtimeNotFound(name: requested, package: "runc", looked: "a runtime named \(requested); use runc or crun")
        }
        guard let path = HelperCommand.find(kind.rawValue) else {
            throw RuntimeError.runtimeNotFound(name: kind.rawValue, package: kind.package, looked: "\(kind.rawValue) in PATH")
        }
        return make(kind, path)
    }

    /// The identity the bundle's user namespace maps to the host: inside the rootless wrapper the caller is already
    /// root of a user namespace, so the container's namespace maps that root (0).
    public var bundleIdentity: RuntimeIdentity {
        if case .rootless = identity, hidesHybridCgroups { return .rootless(hostUID: 0, hostGID: 0) }
        return identity
    }

    /// Global options before the subcommand.
    var globalArguments: [String] {
        var arguments: [String] = []
        if let stateRoot { arguments += ["--root", stateRoot] }
        if identity.isRootless, kind == .crun { arguments.append("--cgroup-manager=disabled") }
        return arguments
    }

    /// The full command line for a runtime subcommand, wrapped as this host needs.
    func commandLine(_ subcommand: [String]) throws -> [String] {
        let direct = [executable] + globalArguments + subcommand
        guard hidesHybridCgroups else { return direct }
        guard let unshare = HelperCommand.find("unshare") else {
            throw RuntimeError.runtimeNotFound(name: "unshare", package: "util-linux", looked: "unshare in PATH")
        }
        // As root the cgroup2 mount can be unmounted in the new namespace; a user namespace cannot unmount a mount
        // it inherited (it is locked), but it can cover it with an empty tmpfs. crun's check looks at the
        // filesystem type there, so either way it sees a v1-only host.
        let script = """
            umount /sys/fs/cgroup/unified 2>/dev/null || mount -t tmpfs -o ro,size=4k,mode=0555 slipway-no-cgroup2 /sys/fs/cgroup/unified \
            || { echo "slipway: cannot hide /sys/fs/cgroup/unified from \(kind.rawValue)" >&2; exit 125; }
            exec "$@"
            """
        let namespaces = identity.isRootless ? ["--user", "--map-root-user", "--mount"] : ["--mount"]
        return [unshare] + namespaces + ["--propagation", "private", "--", "/bin/sh", "-c", script, "slipway-\(kind.rawValue)"] + direct
    }

    /// Runs the container in `bundle` under `id` with Slipway's stdin, stdout and stderr, and returns its exit
    /// status: the container's exit code, or 128+N when it (or the runtime) was killed by signal N. Signals the
    /// forwarder receives meanwhile go to the runtime, which passes them to the container; a container still
    /// running `stopTimeout` seconds after the first is killed (SIGKILL), as `docker stop` does, so that Slipway
    /// cleans up before a scheduler kills it too.
    public func run(bundle: String, id: String, signals: SignalForwarder?, stopTimeout: Double = 10) async throws -> Int32 {
        let arguments = try commandLine(["run", "--bundle", bundle, id])
        let killArguments = try commandLine(["kill", id, "KILL"])
        let pid = try ChildProcess.spawn(arguments)
        signals?.setTarget(pid, escalation: .init(after: stopTimeout) {
            Task { _ = try? await HelperCommand.run(killArguments[0], Array(killArguments.dropFirst())) }
        })
        defer { signals?.setTarget(nil) }
        return await ChildProcess.wait(pid)
    }

    /// Where the runtime keeps its containers' state: `stateRoot`, else its default as root (nil when rootless: that
    /// default depends on the caller's environment).
    var stateDirectory: String? { stateRoot ?? (identity.isRootless ? nil : "/run/\(kind.rawValue)") }

    /// Removes the container's state if the runtime kept any (`delete -f`); errors are ignored. A container that ran
    /// to its end left none (`run` removes it), and asking the runtime would cost another of its starts.
    public func delete(id: String) async {
        if let root = stateDirectory, !FileManager.default.fileExists(atPath: "\(root)/\(id)") { return }
        guard let arguments = try? commandLine(["delete", "--force", id]) else { return }
        _ = try? await HelperCommand.run(arguments[0], Array(arguments.dropFirst()))
    }
}

/// Starting a process that shares our stdin/stdout/stderr and nothing else, and waiting for it.
enum ChildProcess {
    /// posix_spawn with the signal mask cleared and every signal's disposition reset (Slipway ignores SIGPIPE,
    /// and ignored signals would otherwise be inherited by the container), descriptors above 2 closed.
    /// The child shares our stdin, stdout and stderr.
    static func spawn(_ arguments: [String]) throws -> pid_t {
        var pid: pid_t = 0
        let rc = withSpawnDefaults { attributes, actions in
            closeInheritedDescriptors(&actions)
            let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
            defer { argv.forEach { free($0) } }
            return posix_spawn(&pid, arguments[0], &actions, &attributes, argv, environ)
        }
        guard rc == 0 else { throw RuntimeError.spawnFailed(arguments[0], errno: rc) }
        return pid
    }

    /// Waits for the child's end (off the cooperative pool) and returns the exit code, or 128+signal.
    static func wait(_ pid: pid_t) async -> Int32 {
        await runBlocking {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 {
                if errno != EINTR { return 255 }
            }
            return exitCode(status)
        }
    }

    /// WIFEXITED/WEXITSTATUS and WIFSIGNALED/WTERMSIG, which Swift does not import.
    static func exitCode(_ status: Int32) -> Int32 {
        let signal = status & 0x7f
        if signal == 0 { return (status >> 8) & 0xff }
        return 128 + signal
    }
}
