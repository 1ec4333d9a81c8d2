import Foundation
import Testing
import TestSupport

@testable import Runtime

/// `--user` against the image's /etc/passwd and /etc/group, as Docker resolves it.
@Suite(.tags(.unit)) struct UserResolverTests {
    static let passwd = """
        root:x:0:0:root:/root:/bin/sh
        # a comment
        app:x:1000:1000:App:/home/app:/bin/sh
        nohome:x:1001:1001:::/bin/sh
        broken-line
        """
    static let group = """
        root:x:0:
        app:x:1000:
        video:x:44:app
        audio:x:29:other,app
        staff:x:50:
        """

    /// A root filesystem holding the two tables.
    func rootfs(_ directory: ScratchDirectory) throws -> String {
        let root = directory.sub("rootfs")
        try FileManager.default.createDirectory(atPath: "\(root)/etc", withIntermediateDirectories: true)
        try Self.passwd.write(toFile: "\(root)/etc/passwd", atomically: true, encoding: .utf8)
        try Self.group.write(toFile: "\(root)/etc/group", atomically: true, encoding: .utf8)
        return root
    }

    @Test func namesAndIdsResolve() throws {
        let directory = try ScratchDirectory()
        let users = UserResolver(rootfs: try rootfs(directory))
        let app = ResolvedUser(uid: 1000, gid: 1000, additionalGids: [44, 29], home: "/home/app")
        #expect(try users.resolve("app") == app)
        #expect(try users.resolve("1000") == app)
        #expect(try users.resolve(nil) == ResolvedUser(uid: 0, gid: 0, additionalGids: [], home: "/root"))
        #expect(try users.resolve("") == ResolvedUser(uid: 0, gid: 0, additionalGids: [], home: "/root"))
        // A number needs no entry; its group is then 0.
        #expect(try users.resolve("4242") == ResolvedUser(uid: 4242, gid: 0, additionalGids: [], home: nil))
        #expect(try users.resolve("nohome").home == nil)
    }

    @Test func explicitGroupReplacesPrimaryAndSupplementaryGroups() throws {
        let directory = try ScratchDirectory()
        let users = UserResolver(rootfs: try rootfs(directory))
        #expect(try users.resolve("app:staff") == ResolvedUser(uid: 1000, gid: 50, additionalGids: [], home: "/home/app"))
        #expect(try users.resolve("app:123") == ResolvedUser(uid: 1000, gid: 123, additionalGids: [], home: "/home/app"))
        #expect(try users.resolve("4242:video") == ResolvedUser(uid: 4242, gid: 44, additionalGids: [], home: nil))
    }

    @Test(arguments: [
        ("ghost", "no user 'ghost' in the image's /etc/passwd"),
        ("app:ghosts", "no group 'ghosts' in the image's /etc/group"),
        ("app:", "the form is uid[:gid] or name[:group]"),
        (":44", "the form is uid[:gid] or name[:group]"),
    ])
    func unknownOrMalformedUsersAreRefused(_ text: String, _ reason: String) throws {
        let directory = try ScratchDirectory()
        let users = UserResolver(rootfs: try rootfs(directory))
        #expect {
            try users.resolve(text)
        } throws: { error in
            "\(error)" == "user '\(text)': \(reason)"
        }
    }

    @Test func imageWithoutTablesKnowsOnlyNumbers() throws {
        let directory = try ScratchDirectory()
        let users = UserResolver(rootfs: directory.path)
        #expect(try users.resolve("12:34") == ResolvedUser(uid: 12, gid: 34, additionalGids: [], home: nil))
        #expect(throws: RuntimeError.self) { try users.resolve("app") }
    }

    @Test func linksAreFollowedInsideTheRootOnly() throws {
        let directory = try ScratchDirectory()
        let root = directory.sub("rootfs")
        // /etc is an absolute link to /real/etc, which must resolve inside the root.
        try FileManager.default.createDirectory(atPath: "\(root)/real/etc", withIntermediateDirectories: true)
        try Self.passwd.write(toFile: "\(root)/real/etc/passwd", atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: "\(root)/etc", withDestinationPath: "/real/etc")
        // /etc/group climbs out of the root on the host, but not in the container, where .. stops at /.
        try FileManager.default.createDirectory(atPath: directory.sub("outside"), withIntermediateDirectories: true)
        try "escaped:x:7:\n".write(toFile: directory.sub("outside/group"), atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: "\(root)/real/etc/group", withDestinationPath: "../../../outside/group")
        let users = UserResolver(rootfs: root)
        #expect(try users.resolve("app").uid == 1000)
        #expect(throws: RuntimeError.self) { try users.resolve("app:escaped") }
    }
}
