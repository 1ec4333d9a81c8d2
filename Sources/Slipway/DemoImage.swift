import Archive
import ContentStore
import OCI

/// A small image that exercises what real images contain: three layers with directories, files, symlinks,
/// hardlinks, long names, xattrs, a device node, a FIFO, a file owned by another user, a large file, a whiteout
/// and an opaque directory. `slipway demo-image` writes it, the README's first command pushes and unpacks it,
/// and the integration tests use it as their fixture.
public enum DemoImage {
    public static func build(into store: ContentStore, name: String, largeFileBytes: Int = 8 << 20, version: String = "1") throws -> Descriptor {
        var builder = ImageBuilder(store: store)
        let longName = "usr/share/demo/" + String(repeating: "very-long-directory-name/", count: 6) + "file-with-a-long-name.txt"
        try builder.addLayer(
            [
                directory("etc"), directory("usr"), directory("usr/bin"), directory("usr/share"), directory("usr/share/demo"),
                directory("var"), directory("var/cache"), directory("var/cache/demo"), directory("tmp", mode: 0o1777),
                file("etc/os-release", "NAME=\"Slipway demo\"\nID=slipway-demo\n", xattrs: ["user.slipway.origin": Array("demo".utf8)]),
                file("etc/motd", "This file is deleted by the third layer.\n"),
                file("var/cache/demo/stale-1", "stale cache entry\n"),
                file("var/cache/demo/stale-2", "stale cache entry\n"),
                file("usr/bin/hello", "#!/bin/sh\necho hello from the slipway demo image\n", mode: 0o755),
                symlink("usr/bin/hi", target: "hello"),
                hardlink("usr/bin/hello-again", target: "usr/bin/hello"),
                file(longName, "names over 100 bytes need PAX headers\n"),
            ], comment: "base: directories, files, links, long names")
        try builder.addLayer(
            [
                directory("opt"), directory("opt/app"),
                file("opt/app/run.sh", "#!/bin/sh\nexec /usr/bin/hello \"$@\"\n", mode: 0o755),
                file("opt/app/data.bin", pseudoRandomBytes(count: largeFileBytes, seed: 42)),
                symlink("opt/app/config", target: "/etc/os-release"),
            ], comment: "app: scripts and a large incompressible asset")
        try builder.addLayer(
            [
                file("etc/.wh.motd", ""),
                directory("var/cache/demo"),
                file("var/cache/demo/.wh..wh..opq", ""),
                owned(file("var/cache/demo/fresh", "only this survives the opaque directory\n"), uid: 1000, gid: 100),
                directory("dev"),
                (TarHeader(name: "dev/null", type: .characterDevice, mode: 0o666, mtime: mtime, devMajor: 1, devMinor: 3), []),
                (TarHeader(name: "dev/demo.fifo", type: .fifo, mode: 0o600, mtime: mtime), []),
                file("version.txt", "version \(version)\n"),
            ], comment: "patch: whiteout, opaque directory, version")
        return try builder.commit(
            name: name,
            config: ImageConfig.ContainerConfig(Env: ["PATH=/usr/local/bin:/usr/bin:/bin"], Entrypoint: ["/opt/app/run.sh"], WorkingDir: "/opt/app"),
            platform: .host)
    }

    /// Deterministic bytes that do not compress (xorshift), so layer sizes are honest.
    public static func pseudoRandomBytes(count: Int, seed: UInt64) -> [UInt8] {
        var state = seed | 1
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset < count {
                state ^= state << 13
                state ^= state >> 7
                state ^= state << 17
                withUnsafeBytes(of: state.littleEndian) { word in
                    let n = min(8, count - offset)
                    raw.baseAddress!.advanced(by: offset).copyMemory(from: word.baseAddress!, byteCount: n)
                }
                offset += 8
            }
        }
        return bytes
    }

    static let mtime = TarTimestamp(seconds: 1_767_225_600)

    static func directory(_ name: String, mode: UInt32 = 0o755) -> (TarHeader, [UInt8]) {
        (TarHeader(name: name + "/", type: .directory, mode: mode, mtime: mtime), [])
    }

    static func file(_ name: String, _ text: String, mode: UInt32 = 0o644, xattrs: [String: [UInt8]] = [:]) -> (TarHeader, [UInt8]) {
        file(name, Array(text.utf8), mode: mode, xattrs: xattrs)
    }

    static func file(_ name: String, _ bytes: [UInt8], mode: UInt32 = 0o644, xattrs: [String: [UInt8]] = [:]) -> (TarHeader, [UInt8]) {
        (TarHeader(name: name, type: .regular, mode: mode, size: Int64(bytes.count), mtime: mtime, xattrs: xattrs), bytes)
    }

    static func owned(_ entry: (TarHeader, [UInt8]), uid: Int, gid: Int) -> (TarHeader, [UInt8]) {
        var header = entry.0
        header.uid = uid
        header.gid = gid
        return (header, entry.1)
    }

    static func symlink(_ name: String, target: String) -> (TarHeader, [UInt8]) {
        (TarHeader(name: name, type: .symbolicLink, mode: 0o777, mtime: mtime, linkName: target), [])
    }

    static func hardlink(_ name: String, target: String) -> (TarHeader, [UInt8]) {
        (TarHeader(name: name, type: .hardLink, mode: 0o755, mtime: mtime, linkName: target), [])
    }
}
