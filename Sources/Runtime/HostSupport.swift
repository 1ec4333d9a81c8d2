import Foundation

/// How the host's cgroups are mounted, as the runtimes see it.
public enum CgroupLayout: String, Sendable {
    /// cgroup2 at /sys/fs/cgroup.
    case unified
    /// v1 hierarchies only.
    case legacy
    /// v1 hierarchies on a tmpfs at /sys/fs/cgroup plus cgroup2 at /sys/fs/cgroup/unified. crun 1.8 refuses this
    /// ("cgroups in hybrid mode not supported") when the v2 hierarchy has controllers.
    case hybrid

    public static func detect(table: [MountInfoEntry] = Mounts.table()) -> CgroupLayout {
        let top = Mounts.fsType(at: "/sys/fs/cgroup", table: table)
        if top == "cgroup2" { return .unified }
        if top == "tmpfs", Mounts.fsType(at: "/sys/fs/cgroup/unified", table: table) == "cgroup2" { return .hybrid }
        return .legacy
    }

    /// Whether crun (1.8) refuses to run here: hybrid with controllers enabled in the v2 hierarchy.
    public static func crunRefuses(table: [MountInfoEntry] = Mounts.table(), controllersFile: String = "/sys/fs/cgroup/unified/cgroup.controllers")
        -> Bool
    {
        guard detect(table: table) == .hybrid else { return false }
        let controllers = (try? String(contentsOfFile: controllersFile, encoding: .utf8)) ?? ""
        return !controllers.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
    }
}

/// Whether this kernel lets an unprivileged user create user namespaces.
public enum UserNamespaces {
    /// nil when allowed, else the reason they are not.
    public static func unprivilegedRestriction() -> String? {
        func read(_ path: String) -> String? {
            (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if let value = read("/proc/sys/kernel/unprivileged_userns_clone"), value == "0" {
            return "kernel.unprivileged_userns_clone = 0"
        }
        if let value = read("/proc/sys/user/max_user_namespaces"), value == "0" {
            return "user.max_user_namespaces = 0"
        }
        if let value = read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"), value == "1" {
            return "kernel.apparmor_restrict_unprivileged_userns = 1"
        }
        if !FileManager.default.fileExists(atPath: "/proc/self/ns/user") {
            return "the kernel has no user namespaces"
        }
        return nil
    }
}
