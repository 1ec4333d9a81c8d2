import Foundation
import EStargz
import OCI
import Testing
import TestSupport

@testable import ImageTree

@Suite(.tags(.unit)) struct ImageTreeTests {
    func file(_ path: String, size: Int64 = 1, mode: UInt32 = 0o644) -> LayerEntry {
        LayerEntry(path: path, kind: .regular(size: size), permissions: mode, content: .local(path: "/dev/null"))
    }

    func dir(_ path: String, mode: UInt32 = 0o755, uid: UInt32 = 0) -> LayerEntry {
        LayerEntry(path: path, kind: .directory, permissions: mode, uid: uid)
    }

    func names(_ tree: ImageTree, _ path: String) -> [String] {
        tree.node(at: path)?.childNames ?? []
    }

    @Test func whiteoutsAndOpaqueDirectoriesHideLowerLayersOnly() {
        let tree = ImageTree(layers: [
            [dir("etc"), file("etc/motd"), file("etc/hosts"), dir("var/cache"), file("var/cache/a"), file("var/cache/b")],
            // The opaque marker and the whiteout hide lower content; this layer's own var/cache/fresh stays.
            [file("etc/.wh.motd"), file("var/cache/fresh"), file("var/cache/.wh..wh..opq"), file("etc/.wh.missing")],
        ])
        #expect(names(tree, "etc") == ["hosts"])
        #expect(names(tree, "var/cache") == ["fresh"])
        #expect(tree.node(at: "var")?.isDirectory == true)  // created for var/cache although no layer lists it
        #expect(tree.node(at: "etc/.wh.motd") == nil)
        #expect(tree.path(of: tree.node(at: "var/cache/fresh")!.ino) == "var/cache/fresh")
    }

    @Test func oneLayerAsAnOverlayLowerKeepsItsWhiteoutsTheWayOverlayfsReadsThem() {
        var hostile = dir("var/lib")
        hostile.xattrs = ["trusted.overlay.redirect": Array("/etc".utf8), "user.overlay.opaque": Array("y".utf8), "user.note": [1]]
        let tree = ImageTree(overlayLower: [
            dir("etc"), file("etc/.wh.motd"), dir("var/cache", mode: 0o700), file("var/cache/.wh..wh..opq"), file("var/cache/fresh"),
            file("opt/app/.wh..wh..opq"), hostile, file(".wh.."), file("etc/.wh."), file("etc/hosts", size: 7), file("etc/.wh.hosts"),
        ])
        // A whiteout is its name as a 0/0 character device, which hides the name in the layers below.
        let motd = tree.node(at: "etc/motd")
        #expect(motd?.kind == .characterDevice(major: 0, minor: 0) && motd?.permissions == 0)
        #expect(tree.node(at: "etc/.wh.motd") == nil)
        // A whiteout of a name the layer has itself hides lower layers only: the layer's own file stays.
        #expect(names(tree, "etc") == ["motd", "hosts"] && tree.node(at: "etc/hosts")?.size == 7)
        // An opaque directory carries the xattr, keeps its own metadata and its own entries; one the layer does not
        // list is made with default metadata.
        let cache = tree.node(at: "var/cache")
        #expect(cache?.xattrs == [ImageTree.overlayOpaqueXattr: Array("y".utf8)] && cache?.permissions == 0o700)
        #expect(names(tree, "var/cache") == ["fresh"])
        #expect(tree.node(at: "opt/app")?.xattrs[ImageTree.overlayOpaqueXattr] == Array("y".utf8))
        // The layer's own overlay xattrs would steer the kernel: dropped. Others stay. Whiteouts of nothing vanish.
        #expect(tree.node(at: "var/lib")?.xattrs == ["user.note": [1]])
        #expect(names(tree, "") == ["etc", "var", "opt"])
    }

    @Test func upperEntriesReplaceLowerOnesAndDirectoriesMerge() {
        let tree = ImageTree(layers: [
            [dir("opt", mode: 0o700), file("opt/a", size: 1), dir("opt/sub"), file("opt/sub/x")],
            [dir("opt", mode: 0o755, uid: 7), file("opt/a", size: 99), LayerEntry(path: "opt/sub", kind: .symlink(target: "/tmp"), permissions: 0o777)],
        ])
        let opt = tree.node(at: "opt")
        #expect(opt?.permissions == 0o755 && opt?.uid == 7)
        #expect(tree.node(at: "opt/a")?.size == 99)
        #expect(tree.node(at: "opt/sub")?.kind == .symlink(target: "/tmp"))
        #expect(tree.node(at: "opt/sub/x") == nil)
        #expect(opt?.nlink == 2)  // no subdirectory left
    }

    @Test func hardLinksShareAnInode() {
        let tree = ImageTree(layers: [
            [dir("bin"), file("bin/a"), LayerEntry(path: "bin/b", kind: .hardlink(target: "bin/a"), permissions: 0)]
        ])
        let a = tree.node(at: "bin/a"), b = tree.node(at: "bin/b")
        #expect(a?.ino == b?.ino)
        #expect(a?.nlink == 2)
        #expect(tree.fileCount == 1)
        #expect(tree.node(ImageTree.rootIno)?.nlink == 3)  // ".", ".." and bin
    }

    @Test func modtimesRoundTripTheWriterFormat() {
        #expect(parseModtime("2023-11-14T22:13:20Z") == 1_700_000_000)
        #expect(parseModtime("1970-01-01T00:00:00Z") == 0)
        #expect(parseModtime("2000-02-29T12:00:00Z") == 951_825_600)
        #expect(parseModtime("") == 0)
        #expect(parseModtime("garbage-but-long-enough") == 0)
    }
}
