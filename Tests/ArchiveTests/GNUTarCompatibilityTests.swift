import Archive
import Foundation
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

@Suite(.tags(.integration)) struct GNUTarCompatibilityTests {
    struct Node: Equatable, CustomStringConvertible {
        var type: mode_t
        var mode: mode_t
        var size: Int
        var mtime: Int
        var content: [UInt8]?
        var link: String?
        var description: String { "type=\(type) mode=\(String(mode, radix: 8)) size=\(size) mtime=\(mtime) link=\(link ?? "-")" }
    }

    func snapshot(_ root: String) -> [String: Node] {
        var out: [String: Node] = [:]
        let e = FileManager.default.enumerator(atPath: root)!
        while let rel = e.nextObject() as? String {
            let p = root + "/" + rel
            guard let st = lstatOf(p) else { continue }
            let type = st.st_mode & S_IFMT
            out[rel] = Node(
                type: type, mode: st.st_mode & 0o7777, size: type == S_IFREG ? Int(st.st_size) : 0,
                mtime: type == S_IFLNK ? 0 : Int(st.st_mtim.tv_sec),
                content: type == S_IFREG ? readBytes(p) : nil, link: type == S_IFLNK ? linkTarget(p) : nil)
        }
        return out
    }

    func makeTree(_ src: String) throws {
        let fm = FileManager.default
        for d in ["etc", "usr/lib/python3/site-packages/pkg", "var/empty", String(repeating: "deep/", count: 30)] {
            try fm.createDirectory(atPath: src + "/" + d, withIntermediateDirectories: true)
        }
        for (i, size) in [0, 1, 511, 512, 513, 4096, 1 << 20, (3 << 20) + 3].enumerated() {
            try writeBytes(src + "/usr/lib/file\(i)", randomBytes(size, seed: UInt64(i)))
        }
        try writeBytes(src + "/etc/passwd", Array("root:x:0:0::/root:/bin/sh\n".utf8))
        chmod(src + "/etc/passwd", 0o600)
        try writeBytes(src + "/usr/lib/python3/site-packages/pkg/__init__.py", Array("print('hi')\n".utf8))
        try writeBytes(src + "/" + String(repeating: "deep/", count: 30) + String(repeating: "f", count: 150), [1, 2, 3])
        try writeBytes(src + "/suid", [0])
        chmod(src + "/suid", 0o4755)
        Glibc.symlink("../etc/passwd", src + "/usr/passwd-link")
        Glibc.symlink("/nonexistent/absolute", src + "/dangling")
        link(src + "/usr/lib/file3", src + "/usr/lib/file3-hard")
        mkfifo(src + "/var/fifo", 0o644)
        chmod(src + "/var/empty", 0o700)
        chmod(src + "/etc", 0o751)
    }

    @Test func matchesGNUTarExtraction() async throws {
        let sb = Sandbox()
        let src = sb.base + "/src"
        let viaTar = sb.base + "/gnutar"
        mkdir(src, 0o755)
        mkdir(viaTar, 0o755)
        try makeTree(src)
        let layer = sb.base + "/layer.tgz"
        #expect(try await run("tar", ["-C", src, "-czf", layer, "."]).status == 0)
        #expect(try await run("tar", ["-C", viaTar, "-xzpf", layer]).status == 0)

        let result = try LayerApplier.apply(layerAt: layer, compression: .gzip, to: sb.target, options: ApplyOptions())
        let expected = snapshot(viaTar)
        let actual = snapshot(sb.target)
        #expect(expected.count > 20)
        #expect(Set(actual.keys) == Set(expected.keys))
        for (path, node) in expected {
            #expect(actual[path] == node, "\(path): \(String(describing: actual[path])) vs \(node)")
        }
        #expect(lstatOf(sb.target + "/usr/lib/file3")?.st_ino == lstatOf(sb.target + "/usr/lib/file3-hard")?.st_ino)
        // diffID equals sha256 of the gunzipped stream
        let gunzipped = try await run("sh", ["-c", "gzip -dc '\(layer)' | sha256sum"]).stdout.prefix(64)
        #expect(result.diffID == "sha256:" + gunzipped)
        #expect(sb.siblingContents().isEmpty)
    }
}
