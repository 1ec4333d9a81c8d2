import ContentStore
import CLinux
import Crypto
import Foundation
import Images
import Logging
import OCI
import Registry
import Slipway
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Builds the demo image in a layout under `scratch` and returns the layout store and image name.
func makeDemoLayout(_ scratch: ScratchDirectory, largeFileBytes: Int = 4 << 20, version: String = "1") throws -> ContentStore {
    let layout = try ContentStore(root: scratch.sub("layout-\(version)"))
    try DemoImage.build(into: layout, name: "demo", largeFileBytes: largeFileBytes, version: version)
    return layout
}

func makeSession(
    plainHTTP: Bool = true, credentials: [String: Credentials] = [:], readTimeout: Int64 = 10, tls: TLSOptions = TLSOptions()
) throws -> Session {
    var options = Session.Options()
    options.plainHTTP = plainHTTP
    options.tls = tls
    options.credentials = StaticCredentials(credentials)
    options.readTimeoutSeconds = readTimeout
    options.retry = RetryPolicy(maxAttempts: 5, baseDelay: 0.05, maxDelay: 0.5, maxRetryAfter: 2)
    var logger = Logger(label: "test")
    logger.logLevel = .error
    return try Session(options: options, logger: logger)
}

/// Pushes the demo layout to `host/repository:tag` with Slipway's own copier.
@discardableResult
func push(_ layout: ContentStore, to reference: String, session: Session, chunkSize: Int64? = nil) async throws -> TransferReport {
    let source = LayoutImageSource(store: layout, imageName: "demo")
    let destination = try session.destination(for: try ImageLocation(parsing: reference), chunkSize: chunkSize)
    return try await Copier().copy(try await source.resolve(), from: source, to: destination)
}

/// Runs with a session that is shut down afterwards, whatever happens.
func withSession<T>(_ session: Session, _ body: (Session) async throws -> T) async throws -> T {
    try await session.run(body)
}

/// Runs a shell command (which may leave daemons behind: its end is learnt from waitpid) and returns its status.
/// Not system(3): its child inherits every descriptor this process has open without close-on-exec (Foundation
/// opens files so), and a file of a test's mount held open by a daemon keeps that mount's process alive.
func runShellCommand(_ command: String) async throws -> Int32 {
    try await run("/bin/sh", ["-c", command]).status
}

/// The `slipway` executable built beside the test bundle (scripts/test builds it before testing).
let slipwayBinary: String = {
    let candidates = [
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("slipway").path,
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(".build/debug/slipway").path,
    ]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[1]
}()

/// Everything a tree comparison looks at for one path: type, mode, owner, size, content hash, link target,
/// link count and extended attributes.
struct TreeEntry: Equatable, CustomStringConvertible {
    var type: String
    var mode: UInt32
    var uid: UInt32
    var gid: UInt32
    var size: Int64
    var contentHash: String
    var linkTarget: String
    var links: UInt
    var xattrs: [String: String]

    var description: String {
        "\(type) \(String(mode, radix: 8)) \(uid):\(gid) \(size) \(contentHash.prefix(12)) ->\(linkTarget) n=\(links) \(xattrs)"
    }
}

func describeTree(_ root: String) throws -> [String: TreeEntry] {
    var result: [String: TreeEntry] = [:]
    guard let enumerator = FileManager.default.enumerator(atPath: root) else { return result }
    for case let relative as String in enumerator {
        let path = "\(root)/\(relative)"
        var info = stat()
        guard lstat(path, &info) == 0 else { continue }
        let format = info.st_mode & S_IFMT
        var entry = TreeEntry(
            type: "?", mode: info.st_mode & 0o7777, uid: info.st_uid, gid: info.st_gid, size: 0, contentHash: "", linkTarget: "",
            links: UInt(info.st_nlink), xattrs: readXattrs(path))
        switch format {
        case S_IFREG:
            entry.type = "file"
            entry.size = Int64(info.st_size)
            entry.contentHash = SHA256.hash(data: try readClosingOnExec(path)).map { String(format: "%02x", $0) }.joined()
        case S_IFDIR:
            entry.type = "dir"
            entry.links = 0  // directory link counts depend on subdirectory counts only; compared through the entries
        case S_IFLNK:
            entry.type = "symlink"
            entry.linkTarget = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? ""
        case S_IFCHR: entry.type = "char \(info.st_rdev)"
        case S_IFBLK: entry.type = "block \(info.st_rdev)"
        case S_IFIFO: entry.type = "fifo"
        default: break
        }
        result[relative] = entry
    }
    return result
}

/// A file's bytes, read through a descriptor a concurrently spawned process cannot inherit (Foundation's
/// `contents(atPath:)` opens without close-on-exec; a file of a mount left open in a child keeps the mount busy).
func readClosingOnExec(_ path: String) throws -> Data {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw TestSupportError("cannot open \(path): errno \(errno)") }
    return try FileHandle(fileDescriptor: fd, closeOnDealloc: true).readToEnd() ?? Data()
}

func readXattrs(_ path: String) -> [String: String] {
    var names = [CChar](repeating: 0, count: 4096)
    let length = llistxattr(path, &names, names.count)
    guard length > 0 else { return [:] }
    var result: [String: String] = [:]
    let raw = names.prefix(length).map { UInt8(bitPattern: $0) }
    for nameBytes in raw.split(separator: 0) {
        let name = String(decoding: nameBytes, as: UTF8.self)
        var value = [UInt8](repeating: 0, count: 4096)
        let size = lgetxattr(path, name, &value, value.count)
        result[name] = size >= 0 ? value.prefix(size).map { String(format: "%02x", $0) }.joined() : "?"
    }
    return result
}

func layerBlobGETs(_ proxy: FaultProxy) -> [LoggedRequest] {
    proxy.requests(matching: "/blobs/sha256:", method: "GET")
}

/// busybox-static as /bin/sh and friends, /etc/passwd and /etc/group, and a top layer with a whiteout and an
/// opaque directory.
func makeToolsLayout(_ scratch: ScratchDirectory) async throws -> String {
    let fileManager = FileManager.default
    let base = scratch.sub("tools-base")
    for directory in ["bin", "etc", "opq", "root", "home/tester", "tmp"] {
        try fileManager.createDirectory(atPath: "\(base)/\(directory)", withIntermediateDirectories: true)
    }
    chmod("\(base)/tmp", 0o1777)
    try fileManager.copyItem(atPath: "/bin/busybox", toPath: "\(base)/bin/busybox")
    for applet in ["sh", "cat", "echo", "id", "ls", "sleep", "hostname", "wc", "mkdir", "touch", "pwd", "kill", "env", "true", "false", "rm"] {
        try fileManager.createSymbolicLink(atPath: "\(base)/bin/\(applet)", withDestinationPath: "busybox")
    }
    try write("root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1000:tester:/home/tester:/bin/sh\n", to: "\(base)/etc/passwd")
    try write("root:x:0:\ntesters:x:1000:\nextra:x:2000:tester\n", to: "\(base)/etc/group")
    try write("deleted by the top layer\n", to: "\(base)/etc/gone.txt")
    try write("hidden by the opaque directory\n", to: "\(base)/opq/old.txt")
    let top = scratch.sub("tools-top")
    try fileManager.createDirectory(atPath: "\(top)/etc", withIntermediateDirectories: true)
    try fileManager.createDirectory(atPath: "\(top)/opq", withIntermediateDirectories: true)
    try write("", to: "\(top)/etc/.wh.gone.txt")
    try write("", to: "\(top)/opq/.wh..wh..opq")
    try write("the only file of /opq\n", to: "\(top)/opq/new.txt")
    try write("tools 1\n", to: "\(top)/version.txt")
    for (name, root) in [("base", base), ("top", top)] {
        let tarred = try await run("tar", ["--numeric-owner", "--owner=0", "--group=0", "-cf", scratch.sub("\(name).tar"), "-C", root, "."])
        try #require(tarred.status == 0, "tar: \(tarred.stderr)")
    }
    let layout = scratch.sub("tools-layout")
    let assembled = try await run(slipwayBinary, ["assemble", "-q", "oci:\(layout):tools", "--layer", scratch.sub("base.tar"), "--layer", scratch.sub("top.tar")])
    try #require(assembled.status == 0, "assemble: \(assembled.stderr)")
    return layout
}

func write(_ text: String, to path: String) throws {
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
}

/// Reads a whole file with read(2) and reports how it ended: the bytes read and 0, or the errno of the failing
/// call (EIO from a lazy mount whose registry is gone). Close-on-exec, so a child process started meanwhile does
/// not keep a mount busy.
func readFile(_ path: String) throws -> (bytes: Int, errno: Int32) {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return (0, errno) }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    var total = 0
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n < 0 { return (total, errno) }
        if n == 0 { return (total, 0) }
        total += n
    }
}

/// The layers of an image in a registry, as `slipway inspect` lists them.
func layerDescriptors(_ reference: String) async throws -> [(digest: String, size: Int)] {
    let inspected = try await runChecked(slipwayBinary, ["inspect", "--json", reference])
    let layers = try #require(
        (try JSONSerialization.jsonObject(with: Data(inspected.stdout.utf8)) as? [String: Any])?["layers"] as? [[String: Any]])
    return layers.compactMap { layer in
        guard let digest = layer["digest"] as? String, let size = layer["size"] as? Int else { return nil }
        return (digest, size)
    }
}
