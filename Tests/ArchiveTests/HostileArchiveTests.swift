import Archive
import Foundation
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Every hostile case asserts the sibling of the extraction root stays empty.
@Suite(.tags(.unit)) struct HostileArchiveTests {
    func expectKind(
        _ sb: Sandbox, _ tar: [UInt8], compression: LayerCompression = .none,
        _ matches: (ArchiveError.Kind) -> Bool, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let kind = archiveKind { try sb.apply(tar, compression: compression) }
        #expect(kind.map(matches) == true, "got \(String(describing: kind))", sourceLocation: sourceLocation)
        #expect(sb.siblingContents().isEmpty, sourceLocation: sourceLocation)
    }

    func isTraversal(_ k: ArchiveError.Kind) -> Bool { if case .pathTraversal = k { return true } else { return false } }
    func isLinkEscape(_ k: ArchiveError.Kind) -> Bool { if case .linkEscape = k { return true } else { return false } }
    func isTruncated(_ k: ArchiveError.Kind) -> Bool { if case .truncated = k { return true } else { return false } }
    func isCorrupt(_ k: ArchiveError.Kind) -> Bool { if case .corruptCompressedData = k { return true } else { return false } }
    func isBadWhiteout(_ k: ArchiveError.Kind) -> Bool { if case .invalidWhiteout = k { return true } else { return false } }

    @Test(arguments: ["../sibling/evil", "a/../../sibling/evil", "./../sibling/evil", "/../sibling/evil"])
    func dotDotEscapeIsRejected(name: String) throws {
        let sb = Sandbox()
        expectKind(sb, try makeTar { w in try w.add(file(name, "pwned")) }, isTraversal)
    }

    @Test func dotDotInsideRootIsNormalised() throws {
        let sb = Sandbox()
        try sb.apply(try makeTar { w in try w.add(file("a/../b", "ok")) })
        #expect(readBytes(sb.target + "/b") == Array("ok".utf8))
    }

    @Test func absoluteNamesAreMadeRelative() throws {
        let sb = Sandbox()
        let abs = sb.sibling + "/evil"
        try sb.apply(try makeTar { w in
            try w.add(file("/etc/evil-slipway-test", "x"))
            try w.add(file(abs, "y"))
        })
        #expect(readBytes(sb.target + "/etc/evil-slipway-test") == Array("x".utf8))
        #expect(!exists("/etc/evil-slipway-test"))
        #expect(readBytes(sb.target + abs) == Array("y".utf8))
        #expect(sb.siblingContents().isEmpty)
    }

    @Test func symlinkParentCannotRedirectOutOfRoot() throws {
        let sb = Sandbox()
        try sb.apply(try makeTar { w in
            try w.write(symlink("rel", to: "../sibling"))
            try w.add(file("rel/evil1", "1"))
            try w.write(symlink("abs", to: sb.sibling))
            try w.add(file("abs/evil2", "2"))
            try w.write(symlink("l1", to: "l2"))
            try w.write(symlink("l2", to: "../../../../.."))
            try w.add(file("l1/evil3", "3"))
            try w.write(dir("d"))
            try w.write(symlink("d/up", to: "../../.."))
            try w.add(file("d/up/sibling/evil4", "4"))
        })
        #expect(sb.siblingContents().isEmpty)
        // everything landed inside the root, resolved like a chroot
        #expect(readBytes(sb.target + "/sibling/evil1") == Array("1".utf8))
        #expect(readBytes(sb.target + sb.sibling + "/evil2") == Array("2".utf8))
        #expect(readBytes(sb.target + "/evil3") == Array("3".utf8))
        #expect(readBytes(sb.target + "/sibling/evil4") == Array("4".utf8))
    }

    @Test func symlinkLoopIsAnErrorNotAHang() throws {
        let sb = Sandbox()
        let kind = archiveKind {
            try sb.apply(try makeTar { w in
                try w.write(symlink("loop1", to: "loop2"))
                try w.write(symlink("loop2", to: "loop1"))
                try w.add(file("loop1/x", "x"))
            })
        }
        guard case .limitExceeded = kind else {
            Issue.record("expected limitExceeded, got \(String(describing: kind))")
            return
        }
        #expect(sb.siblingContents().isEmpty)
    }

    @Test func finalSymlinkIsReplacedNotFollowed() throws {
        let sb = Sandbox()
        try writeBytes(sb.base + "/outside", Array("original".utf8))
        try sb.apply(try makeTar { w in
            try w.write(symlink("evil", to: sb.base + "/outside"))
            try w.add(file("evil", "overwritten?"))
            try w.write(symlink("evil2", to: "../outside"))
            try w.write(dir("evil2"))
            try w.add(file("evil2/x", "inside"))
        })
        #expect(readBytes(sb.base + "/outside") == Array("original".utf8))
        #expect(readBytes(sb.target + "/evil") == Array("overwritten?".utf8))
        #expect(fileType(sb.target + "/evil2") == S_IFDIR)
        #expect(sb.siblingContents().isEmpty)
    }

    @Test func hardlinkOutsideRootIsRejected() throws {
        let sb = Sandbox()
        try writeBytes(sb.base + "/secret", Array("secret".utf8))
        expectKind(sb, try makeTar { w in try w.write(hardlink("hl", to: "../secret")) }, isLinkEscape)
        expectKind(sb, try makeTar { w in try w.write(hardlink("hl", to: "does/not/exist")) }, isLinkEscape)
        expectKind(sb, try makeTar { w in
            try w.write(symlink("ld", to: sb.base))
            try w.write(hardlink("h2", to: "ld/secret"))
        }, isLinkEscape)
        expectKind(sb, try makeTar { w in
            try w.write(symlink("up", to: "../"))
            try w.write(hardlink("h3", to: "up/secret"))
        }, isLinkEscape)
        #expect(!exists(sb.target + "/hl") && !exists(sb.target + "/h2") && !exists(sb.target + "/h3"))
        var st = stat()
        stat(sb.base + "/secret", &st)
        #expect(st.st_nlink == 1)
    }

    @Test(arguments: [".wh..", ".wh...", "dir/.wh..", "dir/.wh..."])
    func whiteoutOfDotOrDotDotIsRejected(name: String) throws {
        let sb = Sandbox()
        try writeBytes(sb.target + "/keep", Array("k".utf8))
        expectKind(sb, try makeTar { w in try w.add(file(name, "")) }, isBadWhiteout)
        #expect(exists(sb.target + "/keep"))
    }

    @Test func whiteoutCannotEscape() throws {
        let sb = Sandbox()
        try writeBytes(sb.sibling + "/victim", Array("v".utf8))
        let kind = archiveKind { try sb.apply(try makeTar { w in try w.add(file("../sibling/.wh.victim", "")) }) }
        #expect(kind.map(isTraversal) == true)
        // whiteout through a symlinked parent resolves inside the root
        try sb.apply(try makeTar { w in
            try w.write(symlink("s", to: sb.sibling))
            try w.add(file("s/.wh.victim", ""))
        })
        #expect(exists(sb.sibling + "/victim"))
    }

    @Test func hugeSizeWithTruncatedBody() throws {
        let sb = Sandbox()
        var tar = try makeTar { w in try w.add((TarHeader(name: "big", type: .regular), randomBytes(100))) }
        let size: [UInt8] = [0x80, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0]  // 256 GiB
        for i in 0..<12 { tar[124 + i] = size[i] }
        rechecksum(&tar, at: 0)
        let clock = ContinuousClock()
        let elapsed = clock.measure {
            expectKind(sb, tar, isTruncated)
            expectKind(sb, try! gzip(data: tar), compression: .gzip, isTruncated)
        }
        #expect(elapsed < .seconds(5))
    }

    @Test func truncatedGzip() throws {
        let sb = Sandbox()
        let tar = try makeTar { w in try w.add((TarHeader(name: "f", type: .regular), randomBytes(200_000))) }
        let gz = try gzip(data: tar)
        expectKind(sb, Array(gz.prefix(gz.count / 2)), compression: .gzip, isTruncated)
        expectKind(sb, Array(gz.dropLast(4)), compression: .gzip, isTruncated)  // missing part of trailer
        expectKind(sb, [], compression: .gzip, isTruncated)
        let zs = try zstd(data: tar)
        expectKind(sb, Array(zs.prefix(zs.count / 2)), compression: .zstd, isTruncated)
    }

    @Test func corruptGzipByte() throws {
        let sb = Sandbox()
        let tar = try makeTar { w in
            for i in 0..<50 { try w.add(file("f\(i)", String(repeating: "line \(i)\n", count: 500))) }
        }
        var gz = try gzip(data: tar)
        gz[gz.count / 2] ^= 0x5a
        // depending on where the flip lands, inflate fails or the damaged stream runs out of input
        expectKind(sb, gz, compression: .gzip) { isCorrupt($0) || isTruncated($0) }
        var crc = try gzip(data: tar)
        crc[crc.count - 6] ^= 0xff  // CRC32 in the trailer
        let kind = archiveKind { try sb.apply(crc, compression: .gzip) }
        #expect(kind.map(isCorrupt) == true, "\(String(describing: kind))")
        var garbage = try gzip(data: tar)
        garbage += [0x42, 0x42]
        expectKind(sb, garbage, compression: .gzip, isCorrupt)
    }

    @Test func errorsNameTheEntry() throws {
        let e = ArchiveError(.pathTraversal(entry: "../x"))
        #expect(e.description.contains("../x"))
        let io = ArchiveError(.io(operation: "open", path: "a/b", errno: ENOENT))
        #expect(io.description.contains("a/b") && io.description.contains("No such file"))
    }
}
