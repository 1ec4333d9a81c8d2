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
    for applet in ["sh", "cat", "echo", "id", "ls", "sleep", "hostname", "wc", "mkdir", "touch", "pwd", "kill", "env", "true", "false", "rm", "find"] {
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
