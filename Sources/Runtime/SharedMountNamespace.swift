import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A container made only to own a mount namespace that other processes join: the model of the Slurm plugin (and
/// of pyxis with enroot). The runtime creates it and is never told to start it, so its init process waits on the
/// runtime's exec FIFO with the root filesystem pivoted, the mounts made and the masks applied. Each task of a job
/// step then `setns()`es into that namespace and execs its own command there as the job's user, so the tasks stay
/// Slurm's own processes (its signals, exit codes, MPI wiring and accounting), and every task on the node shares
/// one root filesystem, prepared once.
///
/// Only the mount namespace is new: the tasks keep the host's pid, network, IPC and UTS namespaces, as under
/// pyxis, so `/proc` is the host's view and MPI ranks see each other. The host's `/dev` and `/sys` are bound in
/// (GPUs, interconnects and hwloc need them; the tasks run as the user, without capabilities, so the host's
/// device permissions still apply).
public enum SharedMountNamespace {
    /// The spec of the namespace's owner. The runtime checks that the process's executable exists when it creates
    /// the container, even though it never runs it: `/proc/self/exe` (the runtime's own binary, seen through the
    /// container's `/proc`) exists in every image.
    public static func spec(rootfs: String, readOnly: Bool, binds: [BindMount]) throws -> RuntimeSpec {
        let mounts = [
            RuntimeSpec.Mount(destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"]),
            RuntimeSpec.Mount(destination: "/dev", type: "bind", source: "/dev", options: ["rbind", "nosuid"]),
            RuntimeSpec.Mount(destination: "/sys", type: "bind", source: "/sys", options: ["rbind", "nosuid", "noexec", "nodev", "ro"]),
        ] + (try RuntimeBundle.hostMounts(rootfs: rootfs, readOnly: readOnly, binds: binds))
        let process = RuntimeSpec.Process(
            user: RuntimeSpec.User(uid: 0, gid: 0), args: ["/proc/self/exe"], env: ["PATH=/usr/bin:/bin"], cwd: "/",
            capabilities: RuntimeSpec.Capabilities(bounding: [], effective: [], permitted: []))
        let linux = RuntimeSpec.Linux(
            namespaces: [RuntimeSpec.Namespace("mount")], maskedPaths: RuntimeBundle.maskedPaths, readonlyPaths: RuntimeBundle.readonlyPaths)
        return RuntimeSpec(process: process, root: RuntimeSpec.Root(path: rootfs, readonly: readOnly), hostname: nil, mounts: mounts, linux: linux)
    }
}

extension OCIRuntime {
    /// Creates the container in `bundle` without starting it and returns its init process's pid: the process whose
    /// namespaces the container's users join. Its standard streams are files the runtime's helper wrote to, never
    /// a pipe of ours (the init keeps them open for as long as it lives).
    public func create(bundle: String, id: String) async throws -> pid_t {
        let pidFile = "\(bundle)/\(id).pid"
        let arguments = try commandLine(["create", "--bundle", bundle, "--pid-file", pidFile, id])
        try await HelperCommand.run(arguments[0], Array(arguments.dropFirst()))
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
            let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0
        else { throw RuntimeError.commandFailed(command: "\(kind.rawValue) create", status: 0, output: "no pid in \(pidFile)") }
        return pid
    }
}
