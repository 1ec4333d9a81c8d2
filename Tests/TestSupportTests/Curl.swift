import Foundation
import TestSupport

/// Result of one `curl` run.
struct CurlResult {
    var exitCode: Int32
    /// Last HTTP status seen (0 when none).
    var status: Int
    /// Headers of the last response, names lowercased.
    var headers: [String: String]
    var body: Data
    var stderr: String

    func header(_ name: String) -> String? { headers[name.lowercased()] }
    var text: String { String(decoding: body, as: UTF8.self) }
}

/// Runs `curl -sS` with `arguments` plus options capturing headers, body and
/// status. `url` is the last argument.
func curl(_ arguments: [String], _ url: String, maxTime: Double = 10) async throws -> CurlResult {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("curl-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let headerFile = dir.appendingPathComponent("headers")
    let bodyFile = dir.appendingPathComponent("body")

    let finished = try await run(
        "/usr/bin/curl",
        [
            "-sS", "--max-time", String(maxTime), "-H", "Expect:",
            "-D", headerFile.path, "-o", bodyFile.path, "-w", "%{http_code}",
        ] + arguments + [url])

    // The header file holds one block per response (redirects); keep the last.
    var headers: [String: String] = [:]
    let rawHeaders = (try? String(contentsOf: headerFile, encoding: .utf8)) ?? ""
    for line in rawHeaders.components(separatedBy: "\r\n") {
        if line.hasPrefix("HTTP/") {
            headers = [:]
        } else if let colon = line.firstIndex(of: ":") {
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            headers[name] = value
        }
    }
    return CurlResult(
        exitCode: finished.status,
        status: Int(finished.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0,
        headers: headers,
        body: (try? Data(contentsOf: bodyFile)) ?? Data(),
        stderr: finished.stderr)
}

/// Pushes `data` as a blob of `repository` via the monolithic
/// POST-then-PUT upload. Returns the digest.
@discardableResult
func pushBlob(
    _ data: Data, repository: String, to base: URL, extraArguments: [String] = []
) async throws -> String {
    let digest = sha256Digest(data)
    let start = try await curl(extraArguments + ["-X", "POST"], "\(base)/v2/\(repository)/blobs/uploads/")
    guard start.status == 202, var location = start.header("Location") else {
        throw TestSupportError("upload start failed: \(start.status) \(start.text) \(start.stderr)")
    }
    if location.hasPrefix("/") { location = "\(base)\(location)" }
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("blob-\(UUID().uuidString)")
    try data.write(to: file)
    defer { try? FileManager.default.removeItem(at: file) }
    let separator = location.contains("?") ? "&" : "?"
    let put = try await curl(
        extraArguments + [
            "-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary", "@\(file.path)",
        ],
        "\(location)\(separator)digest=\(digest)")
    guard put.status == 201 else {
        throw TestSupportError("upload PUT failed: \(put.status) \(put.text) \(put.stderr)")
    }
    return digest
}

/// Deterministic pseudo-random bytes.
func sampleData(count: Int, seed: UInt64 = 42) -> Data {
    var state = seed
    var bytes = [UInt8]()
    bytes.reserveCapacity(count)
    for _ in 0..<count {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        bytes.append(UInt8(truncatingIfNeeded: state >> 33))
    }
    return Data(bytes)
}

/// Starts a registry and a proxy in front of it, runs `body`, stops both.
func withRegistryAndProxy(
    auth: BasicCredentials? = nil,
    _ body: (RegistryProcess, FaultProxy) async throws -> Void
) async throws {
    try await RegistryProcess.withRegistry(auth: auth) { registry in
        try await FaultProxy.withProxy(upstream: registry) { proxy in
            try await body(registry, proxy)
        }
    }
}
