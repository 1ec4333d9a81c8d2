import CLinux
import Archive
import Foundation
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

@Suite(.tags(.unit)) struct ApplyTests {
    let isRoot = geteuid() == 0

    func allTypesTar(format: TarWriter.LongNameFormat = .pax) throws -> [UInt8] {
        try makeTar(format: format) { w in
            try w.write(dir("etc", mode: 0o755))
            try w.add(file("etc/hosts", "127.0.0.1 localhost\n", mode: 0o644, mtime: 1_500_000_000))
            try w.add(file("usr/bin/tool", "#!/bin/sh\n", mode: 0o4755))  // parents implicit
            try w.write(TarHeader(name: "usr/bin/big", type: .regular, mode: 0o600), contents: randomBytes(3_000_017))
            try w.write(symlink("etc/localtime", to: "/usr/share/zoneinfo/UTC"))
            try w.write(hardlink("etc/hosts.bak", to: "etc/hosts"))
            try w.write(TarHeader(name: "run/fifo", type: .fifo, mode: 0o620))
            try w.write(TarHeader(name: "dev/null", type: .characterDevice, mode: 0o666, devMajor: 1, devMinor: 3))
            try w.write(TarHeader(name: "dev/loop0", type: .blockDevice, mode: 0o660, devMajor: 7, devMinor: 0))
            try w.add(file(TarReaderWriterTests.longName, "long"))
            try w.add(file(TarReaderWriterTests.veryLongName, "very long"))
            try w.write(symlink("longlink", to: "/" + String(repeating: "target/", count: 40) + "end"))
            var x = TarHeader(name: "etc/xattr", type: .regular, uid: 1234, gid: 5678,
                              mtime: TarTimestamp(seconds: 1_234_567_890, nanoseconds: 987_654_321))
            x.xattrs = ["user.slipway.test": Array("value".utf8)]
            try w.write(x, contents: Array("x".utf8))
            try w.write(dir("tmp", mode: 0o1777))
            try w.write(dir("readonly", mode: 0o555))
            try w.add(file("readonly/inside", "ro"))
        }
    }

    func verifyAllTypes(_ sb: Sandbox, result: ApplyResult) throws {
        let t = sb.target
        #expect(readBytes(t + "/etc/hosts") == Array("127.0.0.1 localhost\n".utf8))
        #expect(lstatOf(t + "/etc/hosts")?.st_mtim.tv_sec == 1_500_000_000)
        #expect(lstatOf(t + "/usr/bin/tool").map { $0.st_mode & 0o7777 } == 0o4755)
        #expect(readBytes(t + "/usr/bin/big") == randomBytes(3_000_017))
        #expect(lstatOf(t + "/usr/bin/big").map { $0.st_mode & 0o7777 } == 0o600)
        #expect(linkTarget(t + "/etc/localtime") == "/usr/share/zoneinfo/UTC")
        #expect(lstatOf(t + "/etc/hosts.bak")?.st_ino == lstatOf(t + "/etc/hosts")?.st_ino)
        #expect(fileType(t + "/run/fifo") == S_IFIFO)
        #expect(lstatOf(t + "/run/fifo").map { $0.st_mode & 0o7777 } == 0o620)
        if isRoot {
            #expect(fileType(t + "/dev/null") == S_IFCHR)
            #expect(lstatOf(t + "/dev/null")?.st_rdev == dev_t(259))  // makedev(1, 3)
            #expect(fileType(t + "/dev/loop0") == S_IFBLK)
            #expect(lstatOf(t + "/etc/xattr")?.st_uid == 1234)
            #expect(lstatOf(t + "/etc/xattr")?.st_gid == 5678)
        } else {
            #expect(!exists(t + "/dev/null"))
            #expect(result.skipped.contains { $0.contains("dev/null") })
        }
        #expect(readBytes(t + "/" + TarReaderWriterTests.longName) == Array("long".utf8))
        #expect(readBytes(t + "/" + TarReaderWriterTests.veryLongName) == Array("very long".utf8))
        #expect(linkTarget(t + "/longlink") == "/" + String(repeating: "target/", count: 40) + "end")
        let st = lstatOf(t + "/etc/xattr")
        #expect(st?.st_mtim.tv_sec == 1_234_567_890)
        #expect(st?.st_mtim.tv_nsec == 987_654_321)
        var value = [UInt8](repeating: 0, count: 64)
        let n = getxattr(t + "/etc/xattr", "user.slipway.test", &value, 64)
        if n >= 0 {
            #expect(Array(value[0..<n]) == Array("value".utf8))
        } else {
            #expect(result.skipped.contains { $0.contains("user.slipway.test") })  // fs without user xattrs
        }
        #expect(lstatOf(t + "/tmp").map { $0.st_mode & 0o7777 } == 0o1777)
        #expect(lstatOf(t + "/readonly").map { $0.st_mode & 0o7777 } == 0o555)
        #expect(readBytes(t + "/readonly/inside") == Array("ro".utf8))
        #expect(lstatOf(t + "/etc")?.st_mtim.tv_sec == 1_600_000_000)  // dir mtime applied after children
        #expect(sb.siblingContents().isEmpty)
    }

    @Test(arguments: [LayerCompression.none, .gzip, .zstd])
    func roundTripEveryEntryType(compression: LayerCompression) throws {
        let sb = Sandbox()
        let tar = try allTypesTar()
        let blob: [UInt8]
        switch compression {
        case .none: blob = tar
        case .gzip: blob = try gzip(data: tar)
        case .zstd: blob = try zstd(data: tar)
        }
        #expect(LayerCompression.detect(Array(blob.prefix(4))) == compression)
        let result = try sb.apply(blob, compression: compression)
        #expect(result.entries == 16)
        #expect(result.uncompressedSize == Int64(tar.count))
        try verifyAllTypes(sb, result: result)
    }

    @Test func gnuLongNamesApply() throws {
        let sb = Sandbox()
        let result = try sb.apply(try gzip(data: try allTypesTar(format: .gnu)), compression: .gzip)
        try verifyAllTypes(sb, result: result)
    }

    @Test func multiMemberGzip() async throws {
        let sb = Sandbox()
        let tar = try allTypesTar()
        let cut = 512 * 7 + 100  // split inside a body; members are independent
        let blob = try gzip(data: Array(tar[..<cut]), level: 1) + gzip(data: Array(tar[cut...]), level: 3)
            + [UInt8](repeating: 0, count: 9)  // trailing zero padding is tolerated
        let result = try sb.apply(blob, compression: .gzip)
        try verifyAllTypes(sb, result: result)
        let sbDigest = Sandbox()
        try writeBytes(sbDigest.base + "/t.tar", tar)
        #expect(result.diffID == (try await sha256sum(sbDigest.base + "/t.tar")))
    }

    @Test func multiFrameZstd() throws {
        let sb = Sandbox()
        let tar = try allTypesTar()
        let blob = try zstd(data: Array(tar[..<10_000])) + zstd(data: Array(tar[10_000...]), level: 19)
        let result = try sb.apply(blob, compression: .zstd)
        try verifyAllTypes(sb, result: result)
    }

    @Test(arguments: [LayerCompression.none, .gzip, .zstd])
    func diffIDMatchesSha256sum(compression: LayerCompression) async throws {
        let sb = Sandbox()
        let tar = try allTypesTar() + [UInt8](repeating: 0, count: 10240)  // extra padding is hashed too
        try writeBytes(sb.base + "/layer.tar", tar)
        let expected = try await sha256sum(sb.base + "/layer.tar")
        let blob = compression == .gzip ? try gzip(data: tar) : compression == .zstd ? try zstd(data: tar) : tar
        try writeBytes(sb.base + "/layer.blob", blob)
        let digest = try LayerDigester.diffID(ofLayerAt: sb.base + "/layer.blob", compression: compression)
        #expect(digest.diffID == expected)
        #expect(digest.size == Int64(tar.count))
        let result = try sb.apply(blob, compression: compression)
        #expect(result.diffID == expected)
    }

    @Test func chunkSourceInput() throws {
        let sb = Sandbox()
        let tar = try allTypesTar()
        let blob = try gzip(data: tar)
        final class Feed: @unchecked Sendable {
            var offset = 0
            let data: [UInt8]
            init(_ d: [UInt8]) { data = d }
        }
        let feed = Feed(blob)
        let source = ChunkSource {
            if feed.offset >= feed.data.count { return nil }
            let n = min(3333, feed.data.count - feed.offset)
            defer { feed.offset += n }
            return Array(feed.data[feed.offset..<(feed.offset + n)])
        }
        let result = try LayerApplier.apply(from: source, compression: .gzip, to: sb.target, options: ApplyOptions())
        try verifyAllTypes(sb, result: result)
    }

    @Test func deviceNodesSkippedWhenNotAllowed() throws {
        let sb = Sandbox()
        let result = try sb.apply(try allTypesTar(), options: ApplyOptions(preserveOwnership: false, allowDeviceNodes: false))
        #expect(!exists(sb.target + "/dev/null"))
        #expect(!exists(sb.target + "/dev/loop0"))
        #expect(result.skipped.filter { $0.contains("device node") }.count == 2)
        #expect(fileType(sb.target + "/run/fifo") == S_IFIFO)
    }

    func lowerLayer() throws -> [UInt8] {
        try makeTar { w in
            try w.write(dir("a"))
            try w.add(file("a/x", "x"))
            try w.add(file("a/y", "y"))
            try w.write(dir("b"))
            try w.add(file("b/keep", "lower"))
            try w.add(file("b/sub/deep", "deep"))
            try w.add(file("c", "c"))
            try w.write(dir("e"))
            try w.add(file("e/old", "old"))
            try w.add(file("f", "file"))
            try w.add(file("g/child", "child"))
            try w.add(file("target-of-s", "t"))
            try w.write(symlink("s", to: "target-of-s"))
        }
    }

    @Test func whiteoutsAndOpaqueDirsInApplyMode() throws {
        let sb = Sandbox()
        try sb.apply(try lowerLayer())
        let upper = try makeTar { w in
            try w.add(file("a/.wh.x", ""))
            try w.add(file("b/.wh..wh..opq", ""))
            try w.add(file("b/new", "upper"))
            try w.add(file(".wh.c", ""))
            try w.add(file("missing/.wh.nothing", ""))  // no-op
            try w.add(file("e/new", "new"))
            try w.add(file("e/.wh..wh..opq", ""))  // after own content: own content stays
        }
        let result = try sb.apply(try gzip(data: upper), compression: .gzip, options: ApplyOptions(whiteouts: .apply))
        let t = sb.target
        #expect(!exists(t + "/a/x"))
        #expect(readBytes(t + "/a/y") == Array("y".utf8))
        #expect(!exists(t + "/b/keep"))
        #expect(!exists(t + "/b/sub"))
        #expect(readBytes(t + "/b/new") == Array("upper".utf8))
        #expect(!exists(t + "/c"))
        #expect(!exists(t + "/missing"))
        #expect(readBytes(t + "/e/new") == Array("new".utf8))
        #expect(!exists(t + "/e/old"))
        #expect(result.entries == 7)
        let all = FileManager.default.enumerator(atPath: t)!.allObjects.compactMap { $0 as? String }
        #expect(!all.contains { $0.contains(".wh.") })
    }

    @Test func overlayModeMarkers() throws {
        let sb = Sandbox()
        let upper = try makeTar { w in
            try w.write(dir("b"))
            try w.add(file("b/.wh..wh..opq", ""))
            try w.add(file("a/.wh.x", ""))
            try w.add(file("a/y", "y"))
        }
        try sb.apply(upper, options: ApplyOptions(whiteouts: .overlay))
        let t = sb.target
        if isRoot {
            #expect(fileType(t + "/a/x") == S_IFCHR)
            #expect(lstatOf(t + "/a/x")?.st_rdev == 0)
            #expect(!exists(t + "/a/.wh.x"))
            var value = [UInt8](repeating: 0, count: 8)
            let n = getxattr(t + "/b", "trusted.overlay.opaque", &value, 8)
            #expect(n == 1 && value[0] == UInt8(ascii: "y"))
            #expect(!exists(t + "/b/.wh..wh..opq"))
        } else {
            #expect(fileType(t + "/a/.wh.x") == S_IFREG)
            #expect(fileType(t + "/b/.wh..wh..opq") == S_IFREG)
        }
        #expect(readBytes(t + "/a/y") == Array("y".utf8))
    }

    @Test func replacementSemantics() throws {
        let sb = Sandbox()
        try sb.apply(try lowerLayer())
        let upper = try makeTar { w in
            try w.write(dir("f", mode: 0o700))  // dir replaces file
            try w.add(file("g", "now a file"))  // file replaces dir tree
            try w.add(file("s", "replaced symlink"))  // file replaces symlink; target untouched
            try w.write(dir("e", mode: 0o711))  // dir over dir keeps contents
            try w.add(file("a/x", "rewritten"))  // file replaces file
            try w.write(symlink("c", to: "a/y"))  // symlink replaces file
        }
        try sb.apply(upper)
        let t = sb.target
        #expect(fileType(t + "/f") == S_IFDIR)
        #expect(lstatOf(t + "/f").map { $0.st_mode & 0o7777 } == 0o700)
        #expect(readBytes(t + "/g") == Array("now a file".utf8))
        #expect(readBytes(t + "/s") == Array("replaced symlink".utf8))
        #expect(readBytes(t + "/target-of-s") == Array("t".utf8))
        #expect(readBytes(t + "/e/old") == Array("old".utf8))
        #expect(lstatOf(t + "/e").map { $0.st_mode & 0o7777 } == 0o711)
        #expect(readBytes(t + "/a/x") == Array("rewritten".utf8))
        #expect(linkTarget(t + "/c") == "a/y")
    }

    @Test func symlinkedParentInsideRootIsFollowed() throws {
        // usrmerge: bin -> usr/bin from a lower layer, upper layer writes bin/tool
        let sb = Sandbox()
        try sb.apply(try makeTar { w in
            try w.write(dir("usr/bin"))
            try w.write(symlink("bin", to: "usr/bin"))
        })
        try sb.apply(try makeTar { w in try w.add(file("bin/tool", "t")) })
        #expect(readBytes(sb.target + "/usr/bin/tool") == Array("t".utf8))
        #expect(fileType(sb.target + "/bin") == S_IFLNK)
    }
}
