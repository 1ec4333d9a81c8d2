import ContentStore
import Foundation
import Registry
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// `slipway serve` running as its own process on a free loopback port, over its own store. A separate process
/// (not a server inside the test runner) so that other tests blocking the runner's threads cannot slow it down.
final class RunningCache: Sendable {
    let host: String
    let store: ContentStore
    let accessLogPath: String
    private let process: ChildProcess

    /// `fileLimit`: the server's open-file limit, soft and hard (with prlimit), as on a host with a low limit.
    init(upstream: String, root: String, options: [String], listen: String = "127.0.0.1:0", fileLimit: Int? = nil) async throws {
        accessLogPath = "\(root).access.log"
        let arguments = ["serve", "--upstream", upstream, "--listen", listen, "--root", root, "--access-log", accessLogPath] + options
        if let fileLimit {
            process = try ChildProcess("/usr/bin/prlimit", ["--nofile=\(fileLimit):\(fileLimit)", slipwayBinary] + arguments)
        } else {
            process = try ChildProcess(slipwayBinary, arguments)
        }
        // The first line on stderr names the bound address.
        var banner = ""
        for _ in 0..<6000 where process.endedStatus == nil && !banner.contains("\n") {
            try await Task.sleep(for: .milliseconds(10))
            banner = process.standardErrorSoFar
        }
        guard let address = banner.split(separator: " ").first(where: { $0.hasPrefix("http://") })?.dropFirst("http://".count).dropLast() else {
            process.signal(SIGKILL)
            throw TestSupportError("slipway serve did not start: \(banner)")
        }
        host = String(address.hasSuffix(",") ? address.dropLast() : address)
        store = try ContentStore(root: root)
    }

    var url: String { "http://\(host)" }

    /// SIGTERM, the graceful stop, and waits for the process to end; returns its exit status.
    @discardableResult
    func stop() async -> Int32 {
        process.signal(SIGTERM)
        return await process.exitStatus()
    }

    /// SIGKILL, as a crash: no transfer gets to finish.
    func crash() async {
        process.signal(SIGKILL)
        await process.exitStatus()
    }

    deinit { if process.endedStatus == nil { process.signal(SIGKILL) } }

    /// Whether the blob is committed to the cache's store, waiting a little: clients get a blob's last byte once
    /// it verified, a moment before the commit's fsync and rename.
    func hasBlob(_ descriptor: Descriptor, within limit: Duration = .seconds(10)) async throws -> Bool {
        let deadline = ContinuousClock.now + limit
        while !store.hasBlob(descriptor), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        return store.hasBlob(descriptor)
    }

    /// A counter or gauge from `/metrics`.
    func metric(_ name: String) async throws -> Int64 {
        let text = String(decoding: try await curl("\(url)/metrics").body, as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix("\(name) ") {
            return Int64(line.split(separator: " ")[1]) ?? -1
        }
        return -1
    }

    /// The access log's entries, parsed.
    func accessLog() throws -> [[String: Any]] {
        let text = (try? String(contentsOfFile: accessLogPath, encoding: .utf8)) ?? ""
        return try text.split(separator: "\n").map { line in
            try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
        }
    }
}

func withCache<T>(upstream: String, root: String, options: [String] = [], _ body: (RunningCache) async throws -> T) async throws -> T {
    try await withStopped(try await RunningCache(upstream: upstream, root: root, options: options), stop: { await $0.stop() }, body)
}

/// An HTTP exchange with curl, a client independent of ours.
struct CurlResult {
    var exitCode: Int32
    var status: Int
    var headers: [String: String]
    var body: Data
    var timeToFirstByte: Double
    var total: Double
    var sha256: String { Digest.sha256(of: [UInt8](body)).description }
}

func curl(_ url: String, headers: [String] = [], method: String? = nil, extra: [String] = []) async throws -> CurlResult {
    let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("curl-\(UUID().uuidString)").path
    defer {
        unlink(scratch + ".body")
        unlink(scratch + ".headers")
    }
    var arguments = ["-s", "--path-as-is", "-o", scratch + ".body", "-D", scratch + ".headers", "-w", "%{http_code} %{time_starttransfer} %{time_total}"]
    if let method { arguments += method == "HEAD" ? ["-I"] : ["-X", method] }
    for header in headers { arguments += ["-H", header] }
    let result = try await run("curl", arguments + extra + [url])
    let fields = result.stdout.split(separator: " ")
    var parsed: [String: String] = [:]
    for line in ((try? String(contentsOfFile: scratch + ".headers", encoding: .utf8)) ?? "").split(separator: "\r\n") {
        guard let colon = line.firstIndex(of: ":") else { continue }
        parsed[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    return CurlResult(
        exitCode: result.status, status: fields.first.flatMap { Int($0) } ?? 0, headers: parsed,
        body: FileManager.default.contents(atPath: scratch + ".body") ?? Data(), timeToFirstByte: fields.count > 1 ? Double(fields[1]) ?? 0 : 0,
        total: fields.count > 2 ? Double(fields[2]) ?? 0 : 0)
}

import OCI

extension Digest {
    static func sha256(of bytes: [UInt8]) -> Digest {
        var hasher = DigestHasher(.sha256)
        hasher.update(bytes)
        return hasher.finalize()
    }
}

/// Sends raw bytes to a server and returns what it answers before closing (or within `timeout`). The blocking
/// socket calls run on a dispatch thread, off the concurrency pool the in-process server needs.
func rawExchange(host: String, _ request: [UInt8], timeout: Double = 5) async throws -> String {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try blockingExchange(host: host, request, timeout: timeout) })
        }
    }
}

/// A TCP socket connected to `host` (`IPV4:PORT`); with `waitForConnect: false` the connection may still be
/// completing in the background (a non-blocking socket), as a flood of clients would leave it.
func connectTCP(_ host: String, waitForConnect: Bool = true) throws -> Int32 {
    let parts = host.split(separator: ":")
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | (waitForConnect ? 0 : Int32(SOCK_NONBLOCK.rawValue)), 0)
    guard fd >= 0 else { throw TestSupportError("socket: \(String(cString: strerror(errno)))") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(parts[1])!).bigEndian
    inet_pton(AF_INET, String(parts[0]), &address.sin_addr)
    let connected = withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 || (!waitForConnect && errno == EINPROGRESS) else {
        let error = String(cString: strerror(errno))
        close(fd)
        throw TestSupportError("connect: \(error)")
    }
    return fd
}

private func blockingExchange(host: String, _ request: [UInt8], timeout: Double) throws -> String {
    let fd = try connectTCP(host)
    defer { close(fd) }
    var seconds = timeval(tv_sec: Int(timeout), tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &seconds, socklen_t(MemoryLayout<timeval>.size))
    _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    shutdown(fd, Int32(SHUT_WR))
    var answer: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if got <= 0 { break }
        answer += buffer[0..<got]
    }
    return String(decoding: answer, as: UTF8.self)
}
