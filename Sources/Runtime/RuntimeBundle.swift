import Foundation
import OCI

/// Who the runtime runs as: root on the host, or an unprivileged user whose container gets a user namespace in
/// which that user is root.
public enum RuntimeIdentity: Sendable, Equatable {
    case root
    /// The host ids mapped to root in the container's user namespace (the caller's, or 0 when the runtime already
    /// runs inside a user namespace in which the caller is root).
    case rootless(hostUID: UInt32, hostGID: UInt32)

    public static var current: RuntimeIdentity { geteuid() == 0 ? .root : .rootless(hostUID: geteuid(), hostGID: getegid()) }
    public var isRootless: Bool { self != .root }
}

/// An OCI runtime bundle: a directory with `config.json`, whose root is an already assembled root filesystem.
public struct RuntimeBundle: Sendable {
    public let directory: String
    public let spec: RuntimeSpec

    public var configPath: String { "\(directory)/config.json" }

    /// Builds the spec from the image config and the user's options and writes `config.json` into `directory`.
    /// A named user is looked up in the rootfs's /etc/passwd and /etc/group.
    public static func write(
        to directory: String, image: ImageConfig.ContainerConfig?, options: RunConfiguration, rootfs: String, readOnlyRootfs: Bool,
        identity: RuntimeIdentity, containerID: String
    ) throws -> RuntimeBundle {
        let spec = try makeSpec(
            image: image, options: options, rootfs: rootfs, readOnlyRootfs: readOnlyRootfs, identity: identity, containerID: containerID,
            users: UserResolver(rootfs: rootfs))
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try writeConfig(spec, to: directory)
        return RuntimeBundle(directory: directory, spec: spec)
    }

    /// Writes `spec` as `directory/config.json`.
    public static func writeConfig(_ spec: RuntimeSpec, to directory: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try encoder.encode(spec).write(to: URL(fileURLWithPath: "\(directory)/config.json"), options: .atomic)
    }

    /// The spec alone (no I/O besides reading the rootfs for bind destinations of a read-only root).
    public static func makeSpec(
        image: ImageConfig.ContainerConfig?, options: RunConfiguration, rootfs: String, readOnlyRootfs: Bool, identity: RuntimeIdentity,
        containerID: String, users: UserResolver
    ) throws -> RuntimeSpec {
        let entrypoint = options.entrypoint ?? image?.Entrypoint ?? []
        // A new entrypoint drops the image's Cmd (Docker's rule); a command replaces it.
        let command = options.command ?? (options.entrypoint == nil ? image?.Cmd ?? [] : [])
        let args = entrypoint + command
        guard !args.isEmpty else { throw RuntimeError.noCommand }

        let user = try users.resolve(options.user ?? image?.User)
        if case .rootless = identity, user.uid != 0 || user.gid != 0 {
            throw RuntimeError.invalidUser(
                options.user ?? image?.User ?? "", reason: "without root only your own user is mapped into the container (as root); run as root to use another user")
        }

        var cwd = options.workingDirectory ?? image?.WorkingDir ?? "/"
        if cwd.isEmpty { cwd = "/" }
        if !cwd.hasPrefix("/") { cwd = "/" + cwd }

        let env = mergeEnvironment(image: image?.Env ?? [], overrides: options.environment, home: user.home ?? (user.uid == 0 ? "/root" : "/"))

        let capabilities: RuntimeSpec.Capabilities
        if user.uid == 0 {
            capabilities = RuntimeSpec.Capabilities(bounding: defaultCapabilities, effective: defaultCapabilities, permitted: defaultCapabilities)
        } else {
            capabilities = RuntimeSpec.Capabilities(bounding: defaultCapabilities, effective: [], permitted: [])
        }
        let process = RuntimeSpec.Process(
            user: RuntimeSpec.User(uid: user.uid, gid: user.gid, additionalGids: user.additionalGids.isEmpty ? nil : user.additionalGids),
            args: args, env: env, cwd: cwd, capabilities: capabilities)

        let mounts = defaultMounts(rootless: identity.isRootless) + (try hostMounts(rootfs: rootfs, readOnly: readOnlyRootfs, binds: options.binds))

        var namespaces = ["pid", "ipc", "uts", "mount"].map(RuntimeSpec.Namespace.init)
        var linux = RuntimeSpec.Linux(namespaces: namespaces, maskedPaths: maskedPaths, readonlyPaths: readonlyPaths)
        switch identity {
        case .root:
            linux.cgroupsPath = "/slipway/\(containerID)"
            linux.resources = RuntimeSpec.Resources(devices: [RuntimeSpec.DeviceRule(allow: false, access: "rwm")])
        case .rootless(let uid, let gid):
            namespaces.append(RuntimeSpec.Namespace("user"))
            linux.namespaces = namespaces
            linux.uidMappings = [RuntimeSpec.IDMapping(containerID: 0, hostID: uid, size: 1)]
            linux.gidMappings = [RuntimeSpec.IDMapping(containerID: 0, hostID: gid, size: 1)]
        }
        return RuntimeSpec(
            process: process, root: RuntimeSpec.Root(path: rootfs, readonly: readOnlyRootfs), hostname: options.hostname, mounts: mounts,
            linux: linux)
    }

    /// The host's name resolution (its network is shared) and the user's binds, after `/proc`, `/dev` and `/sys`.
    /// The runtime cannot create mountpoints in a read-only root, so there every mountpoint must exist (most images
    /// have the usual ones; minimal ones may not); a writable root (the overlay's upper) gets the missing ones.
    static func hostMounts(rootfs: String, readOnly: Bool, binds: [BindMount]) throws -> [RuntimeSpec.Mount] {
        if readOnly {
            let missing = ["/proc", "/dev", "/sys"].filter { !RootfsPath.exists($0, in: rootfs) }
            if !missing.isEmpty { throw RuntimeError.readOnlyRootLacks(missing) }
        }
        var mounts: [RuntimeSpec.Mount] = []
        for file in ["/etc/resolv.conf", "/etc/hosts"] where FileManager.default.fileExists(atPath: file) {
            if readOnly && !RootfsPath.exists(file, in: rootfs) { continue }
            mounts.append(RuntimeSpec.Mount(destination: file, type: "bind", source: file, options: ["rbind", "ro", "nosuid", "nodev"]))
        }
        for bind in binds {
            if readOnly && !RootfsPath.exists(bind.destination, in: rootfs) { throw RuntimeError.bindDestinationMissing(bind.destination) }
            mounts.append(bind.specMount)
        }
        return mounts
    }

    /// The image's Env with the user's `KEY=VALUE`s replacing or adding by key, PATH defaulted, HOME set from the
    /// user's passwd entry unless given.
    static func mergeEnvironment(image: [String], overrides: [String], home: String) -> [String] {
        var keys: [String] = []
        var values: [String: String] = [:]
        for variable in image + overrides {
            let key = variable.split(separator: "=", maxSplits: 1).first.map(String.init) ?? variable
            if values[key] == nil { keys.append(key) }
            values[key] = variable
        }
        if values["PATH"] == nil {
            keys.insert("PATH", at: 0)
            values["PATH"] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        }
        if values["HOME"] == nil {
            keys.append("HOME")
            values["HOME"] = "HOME=\(home)"
        }
        return keys.compactMap { values[$0] }
    }

    static func defaultMounts(rootless: Bool) -> [RuntimeSpec.Mount] {
        var devpts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
        // gid 5 (tty) is not mapped in a rootless user namespace.
        if !rootless { devpts.append("gid=5") }
        return [
            RuntimeSpec.Mount(destination: "/proc", type: "proc", source: "proc"),
            RuntimeSpec.Mount(destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"]),
            RuntimeSpec.Mount(destination: "/dev/pts", type: "devpts", source: "devpts", options: devpts),
            RuntimeSpec.Mount(destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
            RuntimeSpec.Mount(destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"]),
            // sysfs cannot be mounted without owning the network namespace, which a rootless container shares with the
            // host: bind it instead, as runc's rootless spec does.
            rootless
                ? RuntimeSpec.Mount(destination: "/sys", type: "bind", source: "/sys", options: ["rbind", "nosuid", "noexec", "nodev", "ro"])
                : RuntimeSpec.Mount(destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"]),
        ]
    }

    /// Docker's default capability set (for a process running as uid 0).
    static let defaultCapabilities = [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP",
        "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
    ]

    static let maskedPaths = [
        "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
        "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
    ]

    static let readonlyPaths = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
}
