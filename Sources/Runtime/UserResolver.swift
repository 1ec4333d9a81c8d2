import Foundation

/// The user a container's process runs as.
public struct ResolvedUser: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    public var additionalGids: [UInt32]
    /// The home directory from /etc/passwd, when the user has an entry.
    public var home: String?
}

/// Resolves `uid[:gid]` and `name[:group]` against the image's /etc/passwd and /etc/group, as Docker does: a
/// number needs no entry, a name must have one; without a group the user's primary group is used (0 when the
/// uid has no entry); supplementary groups come from /etc/group.
public struct UserResolver: Sendable {
    struct PasswdEntry { var name: String; var uid: UInt32; var gid: UInt32; var home: String }
    struct GroupEntry { var name: String; var gid: UInt32; var members: [String] }

    let passwd: [PasswdEntry]
    let groups: [GroupEntry]

    /// Reads the tables from a root filesystem; symlinks are followed inside `rootfs`, never out of it.
    public init(rootfs: String) {
        passwd = Self.read(rootfs: rootfs, "/etc/passwd").compactMap { fields in
            guard fields.count >= 6, let uid = UInt32(fields[2]), let gid = UInt32(fields[3]) else { return nil }
            return PasswdEntry(name: fields[0], uid: uid, gid: gid, home: fields[5])
        }
        groups = Self.read(rootfs: rootfs, "/etc/group").compactMap { fields in
            guard fields.count >= 3, let gid = UInt32(fields[2]) else { return nil }
            let members = fields.count > 3 ? fields[3].split(separator: ",").map(String.init) : []
            return GroupEntry(name: fields[0], gid: gid, members: members)
        }
    }

    init(passwd: String, group: String) {
        self.passwd = Self.parse(passwd).compactMap { fields in
            guard fields.count >= 6, let uid = UInt32(fields[2]), let gid = UInt32(fields[3]) else { return nil }
            return PasswdEntry(name: fields[0], uid: uid, gid: gid, home: fields[5])
        }
        groups = Self.parse(group).compactMap { fields in
            guard fields.count >= 3, let gid = UInt32(fields[2]) else { return nil }
            return GroupEntry(name: fields[0], gid: gid, members: fields.count > 3 ? fields[3].split(separator: ",").map(String.init) : [])
        }
    }

    public func resolve(_ text: String?) throws -> ResolvedUser {
        let text = text ?? ""
        if text.isEmpty { return entryUser(uid: 0, name: "root") }
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard !parts[0].isEmpty, parts.count == 1 || !parts[1].isEmpty else {
            throw RuntimeError.invalidUser(text, reason: "the form is uid[:gid] or name[:group]")
        }
        var user: ResolvedUser
        if let uid = UInt32(parts[0]) {
            user = entryUser(uid: uid, name: nil)
        } else {
            guard let entry = passwd.first(where: { $0.name == parts[0] }) else {
                throw RuntimeError.invalidUser(text, reason: "no user '\(parts[0])' in the image's /etc/passwd")
            }
            user = entryUser(uid: entry.uid, name: entry.name)
        }
        if parts.count == 2 {
            if let gid = UInt32(parts[1]) {
                user.gid = gid
            } else {
                guard let group = groups.first(where: { $0.name == parts[1] }) else {
                    throw RuntimeError.invalidUser(text, reason: "no group '\(parts[1])' in the image's /etc/group")
                }
                user.gid = group.gid
            }
            // An explicit group replaces the supplementary groups too, as Docker does.
            user.additionalGids = []
        }
        return user
    }

    private func entryUser(uid: UInt32, name: String?) -> ResolvedUser {
        let entry = name.flatMap { name in passwd.first { $0.name == name } } ?? passwd.first { $0.uid == uid }
        guard let entry else { return ResolvedUser(uid: uid, gid: 0, additionalGids: [], home: nil) }
        let extra = groups.filter { $0.members.contains(entry.name) && $0.gid != entry.gid }.map(\.gid)
        return ResolvedUser(uid: entry.uid, gid: entry.gid, additionalGids: extra, home: entry.home.isEmpty ? nil : entry.home)
    }

    private static func read(rootfs: String, _ path: String) -> [[String]] {
        guard let host = RootfsPath.resolve(path, in: rootfs), let data = FileManager.default.contents(atPath: host) else { return [] }
        return parse(String(decoding: data, as: UTF8.self))
    }

    private static func parse(_ text: String) -> [[String]] {
        text.split(separator: "\n").compactMap { line in
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty, !trimmed.hasPrefix("#") else { return nil }
            return trimmed.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        }
    }
}

/// Paths inside a root filesystem, resolved as the container would see them: symlinks (absolute or relative) are
/// followed within the root and `..` stops at it.
enum RootfsPath {
    /// The host path of `path` in `rootfs`, or nil when a component is missing or there are too many links.
    static func resolve(_ path: String, in rootfs: String) -> String? {
        var pending = path.split(separator: "/").map(String.init)
        var resolved: [String] = []
        var links = 0
        while !pending.isEmpty {
            let component = pending.removeFirst()
            if component == "." || component.isEmpty { continue }
            if component == ".." {
                if !resolved.isEmpty { resolved.removeLast() }
                continue
            }
            let host = rootfs + "/" + (resolved + [component]).joined(separator: "/")
            var info = stat()
            guard lstat(host, &info) == 0 else { return nil }
            if info.st_mode & S_IFMT == S_IFLNK {
                links += 1
                guard links <= 40, let target = try? FileManager.default.destinationOfSymbolicLink(atPath: host) else { return nil }
                if target.hasPrefix("/") { resolved = [] }
                pending = target.split(separator: "/").map(String.init) + pending
                continue
            }
            resolved.append(component)
        }
        return rootfs + "/" + resolved.joined(separator: "/")
    }

    /// Whether `path` exists in `rootfs` (following links inside it).
    static func exists(_ path: String, in rootfs: String) -> Bool { resolve(path, in: rootfs) != nil }
}
