import Foundation

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

    private let process: ChildProcess
    private let lock = NSLock()
    private var removedWorkDirectory = false

    private init(
        port: Int, workDirectory: URL, storageDirectory: URL, logFile: URL,
        credentials: BasicCredentials?, tls: TLSFiles?, process: ChildProcess
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
        if process.endedStatus == nil { process.signal(SIGKILL) }
        if !removedWorkDirectory {
            try? FileManager.default.removeItem(at: workDirectory)
        }
    }

    /// Whether the registry process is still alive.
    public var isRunning: Bool { process.endedStatus == nil }

    /// PID of the registry process.
    public var processIdentifier: Int32 { process.pid }

    /// Starts a registry on a loopback port the kernel picks and waits until it listens.
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

        // Port 0: the kernel picks a port and the registry's log names it. A port found free beforehand can be
        // taken (by any outgoing connection) before the registry binds it.
        let configFile = work.appendingPathComponent("config.yml")
        try Data(makeConfig(storage: storage.path, htpasswd: htpasswdPath, tls: tlsFiles).utf8).write(to: configFile)
        let process = try ChildProcess(
            executablePath, ["serve", configFile.path], directory: work.path, log: logFile.path)
        do {
            let port = try await listeningPort(of: process, log: logFile)
            return RegistryProcess(
                port: port, workDirectory: work, storageDirectory: storage, logFile: logFile,
                credentials: auth, tls: tlsFiles, process: process)
        } catch {
            process.signal(SIGKILL)
            await process.exitStatus()
            try? FileManager.default.removeItem(at: work)
            throw error
        }
    }

    /// The port of the registry's "listening on 127.0.0.1:PORT" line, logged once its socket listens.
    private static func listeningPort(of process: ChildProcess, log: URL) async throws -> Int {
        let marker = "listening on 127.0.0.1:"
        for _ in 0..<800 {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            if let found = text.range(of: marker),
                let port = Int(text[found.upperBound...].prefix(while: \.isNumber))
            {
                return port
            }
            guard process.endedStatus == nil else {
                throw TestSupportError("docker-registry exited during startup:\n\(text)")
            }
            try await Task.sleep(for: .milliseconds(25))
        }
        throw TestSupportError("docker-registry did not listen within 20 s:\n\((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
    }

    /// Starts a registry, runs `body`, then stops the registry (also when
    /// `body` throws).
    public static func withRegistry<T>(
        auth: BasicCredentials? = nil, tls: Bool = false,
        _ body: (RegistryProcess) async throws -> T
    ) async throws -> T {
        try await withStopped(try await start(auth: auth, tls: tls), stop: { await $0.stop() }, body)
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
        process.signal(SIGTERM)
        let stopped = Task { [process] in await process.exitStatus() }
        let killer = Task { [process] in
            try await Task.sleep(for: .seconds(5))
            process.signal(SIGKILL)
        }
        _ = await stopped.value
        killer.cancel()
    }

    /// The registry's log output so far (for diagnostics in failing tests).
    public func logContents() -> String {
        (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
    }

    // MARK: - Helpers

    static func makeConfig(storage: String, htpasswd: String?, tls: TLSFiles? = nil) -> String {
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
              addr: 127.0.0.1:0
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

/// A loopback port bound by a socket that does not listen, so connections to it are refused and no other
/// process can take it while `body` runs.
public func withRefusingLoopbackPort<T>(_ body: (Int) async throws -> T) async throws -> T {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestSupportError("socket: errno \(errno)") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw TestSupportError("bind: errno \(errno)") }
    return try await body(Int(UInt16(bigEndian: address.sin_port)))
}
