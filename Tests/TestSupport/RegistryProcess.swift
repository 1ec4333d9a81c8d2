import Foundation
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors raised by the test-support process helpers.
public struct TestSupportError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A real OCI distribution registry (`docker-registry` 2.8 from Debian's
/// `docker-registry` package) running on 127.0.0.1 with a private storage
/// directory. Optionally protected by htpasswd basic auth (needs `htpasswd`
/// from Debian's `apache2-utils`).
///
/// Start with ``start(auth:)``; always call ``stop()`` when done (the
/// process is also killed in `deinit` as a safety net), or use
/// ``withRegistry(auth:_:)`` which stops it for you.
public final class RegistryProcess: @unchecked Sendable {
    /// Path of the registry binary.
    public static let executablePath = "/usr/bin/docker-registry"

    /// "127.0.0.1:PORT"
    public let host: String
    public let port: Int
    /// "http://127.0.0.1:PORT", or https when started with TLS.
    public let url: URL
    /// The certificate authority and server certificate, when started with TLS.
    public let tls: TLSFiles?
    /// Filesystem storage root of the registry (inside ``workDirectory``).
    public let storageDirectory: URL
    /// Temporary directory holding config, htpasswd, storage and log.
    public let workDirectory: URL
    /// The registry's combined stdout/stderr.
    public let logFile: URL
    /// Credentials required by the registry, when started with auth.
    public let credentials: BasicCredentials?

    private let lock = NSLock()
    private var process: Process?
    private var removedWorkDirectory = false

    private init(
        port: Int, workDirectory: URL, storageDirectory: URL, logFile: URL,
        credentials: BasicCredentials?, tls: TLSFiles?, process: Process
    ) {
        self.port = port
        self.host = "127.0.0.1:\(port)"
        self.url = URL(string: "\(tls == nil ? "http" : "https")://127.0.0.1:\(port)")!
        self.tls = tls
        self.workDirectory = workDirectory
        self.storageDirectory = storageDirectory
        self.logFile = logFile
        self.credentials = credentials
        self.process = process
    }

    deinit {
        if let process, process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
        if !removedWorkDirectory {
            try? FileManager.default.removeItem(at: workDirectory)
        }
    }

    /// Whether the registry process is still alive.
    public var isRunning: Bool {
        lock.withLock { process?.isRunning ?? false }
    }

    /// PID of the registry process (0 once stopped).
    public var processIdentifier: Int32 {
        lock.withLock { process?.processIdentifier ?? 0 }
    }

    /// Starts a registry on a free loopback port and waits until `GET /v2/`
    /// answers (200 without auth, 401 with auth).
    public static func start(auth: BasicCredentials? = nil, tls: Bool = false) async throws -> RegistryProcess {
        guard FileManager.default.isExecutableFile(atPath: executablePath) else {
            throw TestSupportError(
                "\(executablePath) not found: install Debian's docker-registry package (scripts/test does)")
        }
        let work = FileManager.default.temporaryDirectory
            .appendingPathComponent("slipway-registry-\(UUID().uuidString)", isDirectory: true)
        let storage = work.appendingPathComponent("storage", isDirectory: true)
        try FileManager.default.createDirectory(at: storage, withIntermediateDirectories: true)
        var htpasswdPath: String?
        if let auth {
            let line = try await makeHtpasswdLine(auth)
            let file = work.appendingPathComponent("htpasswd")
            try Data(line.utf8).write(to: file)
            htpasswdPath = file.path
        }
        let logFile = work.appendingPathComponent("registry.log")
        let tlsFiles = await tls ? try TLSFiles.generate(in: work) : nil

        var lastError: Error = TestSupportError("registry did not start")
        // The port is picked by binding port 0 and releasing it; another
        // process may grab it in between, so retry a few times.
        for _ in 0..<5 {
            let port = try await freeLoopbackPort()
            let config = makeConfig(port: port, storage: storage.path, htpasswd: htpasswdPath, tls: tlsFiles)
            let configFile = work.appendingPathComponent("config.yml")
            try Data(config.utf8).write(to: configFile)
            _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
            let logHandle = try FileHandle(forWritingTo: logFile)
            try logHandle.seekToEnd()

            let process = Process()
            process.executableURL = URL(fileURLWithPath: executablePath)
            process.arguments = ["serve", configFile.path]
            process.standardOutput = logHandle
            process.standardError = logHandle
            process.standardInput = FileHandle.nullDevice
            process.currentDirectoryURL = work
            try process.run()
            try? logHandle.close()

            let registry = RegistryProcess(
                port: port, workDirectory: work, storageDirectory: storage, logFile: logFile,
                credentials: auth, tls: tlsFiles, process: process)
            do {
                try await registry.waitUntilReady(expectAuth: auth != nil)
                return registry
            } catch {
                lastError = error
                // Keep the work directory for the next attempt.
                registry.lock.withLock { registry.removedWorkDirectory = true }
                await registry.terminateProcess()
            }
        }
        try? FileManager.default.removeItem(at: work)
        throw lastError
    }

    /// Starts a registry, runs `body`, then stops the registry (also when
    /// `body` throws).
    public static func withRegistry<T>(
        auth: BasicCredentials? = nil, tls: Bool = false,
        _ body: (RegistryProcess) async throws -> T
    ) async throws -> T {
        let registry = try await start(auth: auth, tls: tls)
        do {
            let result = try await body(registry)
            await registry.stop()
            return result
        } catch {
            await registry.stop()
            throw error
        }
    }

    /// Sends SIGTERM, waits up to 5 s for exit, then SIGKILLs. Removes the
    /// work directory (storage included). Safe to call more than once.
    public func stop() async {
        await terminateProcess()
        let remove = lock.withLock { () -> Bool in
            defer { removedWorkDirectory = true }
            return !removedWorkDirectory
        }
        if remove {
            try? FileManager.default.removeItem(at: workDirectory)
        }
    }

    private func terminateProcess() async {
        let process = lock.withLock { () -> Process? in
            let p = self.process
            self.process = nil
            return p
        }
        guard let process, process.isRunning else { return }
        process.terminate()
        let deadline = ContinuousClock.now + .seconds(5)
        while process.isRunning && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            while process.isRunning {
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    /// The registry's log output so far (for diagnostics in failing tests).
    public func logContents() -> String {
        (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
    }

    // MARK: - Helpers

    private func waitUntilReady(expectAuth: Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            guard isRunning else {
                throw TestSupportError("docker-registry exited during startup:\n\(logContents())")
            }
            // Another server that took the port between our probe and the registry's bind would answer too: only
            // the registry's own "listening on" line proves the port is the registry's.
            // A TLS listener answers a plain-HTTP probe with 400 ("client sent an HTTP request to an HTTPS server").
            if logContents().contains("listening on 127.0.0.1:\(port)"),
                let status = blockingHTTPStatus(port: port, path: "/v2/"), status == 200 || status == 401 || (tls != nil && status == 400)
            {
                return
            }
            try await Task.sleep(for: .milliseconds(25))
        }
        throw TestSupportError("docker-registry did not answer on \(host) within 20 s:\n\(logContents())")
    }

    static func makeConfig(port: Int, storage: String, htpasswd: String?, tls: TLSFiles? = nil) -> String {
        var config = """
            version: 0.1
            log:
              level: info
              accesslog:
                disabled: false
            storage:
              filesystem:
                rootdirectory: \(storage)
              delete:
                enabled: true
              maintenance:
                uploadpurging:
                  enabled: false
            http:
              addr: 127.0.0.1:\(port)
              secret: slipway-test-\(UUID().uuidString)

            """
        if let tls {
            config += """
                  tls:
                    certificate: \(tls.certificate)
                    key: \(tls.key)

                """
        }
        if let htpasswd {
            config += """
                auth:
                  htpasswd:
                    realm: slipway-test-registry
                    path: \(htpasswd)

                """
        }
        return config
    }

    /// Runs `htpasswd -Bbn user password` (apache2-utils) and returns its line.
    static func makeHtpasswdLine(_ credentials: BasicCredentials) async throws -> String {
        let candidates = ["/usr/bin/htpasswd", "/usr/sbin/htpasswd", "/usr/local/bin/htpasswd"]
        guard let tool = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw TestSupportError("htpasswd not found: install Debian's apache2-utils package (scripts/test does)")
        }
        let made = try await run(tool, ["-Bbn", credentials.username, credentials.password])
        let text = made.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard made.status == 0, !text.isEmpty else {
            throw TestSupportError("htpasswd failed with status \(made.status): \(made.stderr)")
        }
        return text + "\n"
    }
}

/// Returns a loopback TCP port that was free a moment ago (bind port 0,
/// read the port, release it).
public func freeLoopbackPort() async throws -> Int {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .bind(host: "127.0.0.1", port: 0)
        .get()
    let port = channel.localAddress?.port ?? 0
    try await channel.close()
    guard port > 0 else { throw TestSupportError("could not find a free port") }
    return port
}

/// Minimal blocking `GET path` on 127.0.0.1:port over HTTP/1.0 returning the
/// status code, or nil when the connection fails. Used only for readiness
/// polling.
func blockingHTTPStatus(port: Int, path: String, timeoutSeconds: Int = 2) -> Int? {
    #if canImport(Glibc) || canImport(Musl)
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
    let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
    _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard connected == 0 else { return nil }
    let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1:\(port)\r\n\r\n".utf8)
    let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
    guard sent == request.count else { return nil }
    var response = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 1024)
    while response.count < 64 {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        response.append(contentsOf: buffer[0..<n])
    }
    // "HTTP/1.1 200 OK"
    let line = String(decoding: response, as: UTF8.self)
    let parts = line.split(separator: " ", maxSplits: 2)
    guard parts.count >= 2, parts[0].hasPrefix("HTTP/") else { return nil }
    return Int(parts[1])
}
