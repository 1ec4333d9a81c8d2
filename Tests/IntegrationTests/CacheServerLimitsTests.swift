import ContentStore
import Foundation
import OCI
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// `slipway serve` against clients that hold connections without using them, send requests a byte at a time,
/// open more connections than it should hold, or guess passwords: everyone else is still answered.
@Suite(.tags(.integration, .slow), .serialized)
struct CacheServerLimitsTests {
    let fixtures = PullThroughCacheTests()

    @Test func twoThousandIdleConnectionsAndASlowlorisDoNotStopAPull() async throws {
        try raiseOpenFileLimit(atLeast: 2300)
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let (manifest, _) = try await fixtures.publish(registry, scratch)
            // With 1,024 descriptors, 2,000 connections held open would leave the server none to accept with.
            let cache = try await RunningCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache"), options: [], fileLimit: 1024)
            let idle = try (0..<2000).map { _ in try RawConnection(host: cache.host, waitForConnect: false) }
            defer { idle.forEach { $0.close() } }
            let slowloris = try RawConnection(host: cache.host)
            defer { slowloris.close() }
            async let slowlorisCut = slowloris.trickle(Array("GET /v2/ HTTP/1.1\r\nHost: cache\r\n".utf8) + Array(repeating: UInt8(ascii: "X"), count: 10_000), every: .seconds(2), giveUpAfter: .seconds(90))

            let pulled = try await run("timeout", ["120", slipwayBinary, "pull", "-q", "--store", scratch.sub("store"), "\(cache.host)/demo:v1"])
            #expect(pulled.status == 0, "pull through the cache: \(pulled.stderr)")
            let store = try ContentStore(root: scratch.sub("store"))
            #expect(store.hasBlob(manifest))
            #expect(await slowlorisCut, "the server never closed a connection sending its request a byte every 2 s")
            await cache.stop()
        }
    }

    @Test func runningOutOfDescriptorsDelaysNewConnectionsWithoutStoppingTheServer() async throws {
        try raiseOpenFileLimit(atLeast: 1000)
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { _, proxy in
            // A limit set above what 256 descriptors allow: accepting fails with EMFILE until idle ones are closed.
            let options = ["--max-connections", "1000", "--idle-timeout", "2"]
            let cache = try await RunningCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache"), options: options, fileLimit: 256)
            let flood = try (0..<600).map { _ in try RawConnection(host: cache.host, waitForConnect: false) }
            defer { flood.forEach { $0.close() } }
            let deadline = ContinuousClock.now + .seconds(60)
            var answer = try await curl("\(cache.url)/v2/", extra: ["--max-time", "5"])
            while answer.status != 200, ContinuousClock.now < deadline {
                answer = try await curl("\(cache.url)/v2/", extra: ["--max-time", "5"])
            }
            #expect(answer.status == 200, "the server did not answer again once idle connections were closed")
            #expect(await cache.stop() == 0)
        }
    }

    @Test func idleConnectionsAreClosedButSlowAnswersAreNot() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let (_, layers) = try await fixtures.publish(registry, scratch, largeFileBytes: 6 << 20)
            let large = layers.last!
            let options = ["--idle-timeout", "1", "--header-timeout", "1"]
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache"), options: options) { cache in
                let silent = try RawConnection(host: cache.host)
                defer { silent.close() }
                let keptAlive = try RawConnection(host: cache.host)
                defer { keptAlive.close() }
                try keptAlive.send(Array("GET /v2/ HTTP/1.1\r\nHost: cache\r\n\r\n".utf8))
                let answer = try await keptAlive.read(until: "{}", within: .seconds(30))
                #expect(answer.hasPrefix("HTTP/1.1 200") && answer.contains("keep-alive"), "\(answer)")
                #expect(await keptAlive.waitForClose(within: .seconds(30)), "a keep-alive connection idle past --idle-timeout stayed open")
                #expect(await silent.waitForClose(within: .seconds(30)), "a connection that never sent a byte stayed open")

                // A cold blob arriving slowly from upstream takes longer than both timeouts: it is not cut.
                proxy.addRule(FaultRule(path: "/blobs/\(large.digest)", fault: .throttle(bytesPerSecond: 2 << 20), times: 100))
                let download = try await curl("\(cache.url)/v2/demo/blobs/\(large.digest)")
                #expect(download.status == 200 && download.sha256 == large.digest.description)
                #expect(download.total > 2, "the throttled download was faster than the timeouts it should outlast")
            }
        }
    }

    @Test func connectionsBeyondTheLimitGetA503InTheSpecsFormat() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let (_, layers) = try await fixtures.publish(registry, scratch, largeFileBytes: 6 << 20)
            let large = layers.last!
            proxy.addRule(FaultRule(path: "/blobs/\(large.digest)", fault: .throttle(bytesPerSecond: 64 << 10), times: 100))
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache"), options: ["--max-connections", "2"]) { cache in
                // Two connections busy with slow downloads: neither is idle, so neither gives way to a third.
                var downloads: [RawConnection] = []
                defer { downloads.forEach { $0.close() } }
                for _ in 0..<2 {
                    let download = try RawConnection(host: cache.host)
                    downloads.append(download)
                    try download.send(Array("GET /v2/demo/blobs/\(large.digest) HTTP/1.1\r\nHost: cache\r\n\r\n".utf8))
                    let head = try await download.read(until: "\r\n\r\n", within: .seconds(30))
                    #expect(head.hasPrefix("HTTP/1.1 200"), "\(head)")
                }
                let refused = try await curl("\(cache.url)/v2/")
                #expect(refused.status == 503)
                #expect(Int(refused.headers["retry-after"] ?? "") ?? 0 > 0)
                let error = try JSONSerialization.jsonObject(with: refused.body) as? [String: [[String: String]]]
                #expect(error?["errors"]?.first?["code"] == "UNAVAILABLE")
                #expect(error?["errors"]?.first?["message"]?.contains("2 connections") == true)

                // Once the downloads are gone, the server answers again.
                downloads.forEach { $0.close() }
                downloads = []
                let deadline = ContinuousClock.now + .seconds(30)
                var status = 0
                while status != 200, ContinuousClock.now < deadline {
                    status = try await curl("\(cache.url)/v2/").status
                    if status != 200 { try await Task.sleep(for: .milliseconds(100)) }
                }
                #expect(status == 200)
                proxy.removeAllRules()
            }
        }
    }

    @Test func repeatedWrongPasswordsAreThrottledWhileAuthorizedClientsAreServed() async throws {
        let scratch = try ScratchDirectory()
        let passwords = try await writeAlicePasswords(scratch)
        try await withRegistryAndProxy { _, proxy in
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache"), options: ["--htpasswd", passwords]) { cache in
                #expect(try await curl("\(cache.url)/v2/", extra: ["-u", "alice:s3cret-pass"]).status == 200)
                // Eight clients guessing at once, as in the audit; all from this address.
                let statuses = try await withThrowingTaskGroup(of: [Int].self) { group in
                    for guesser in 0..<8 {
                        group.addTask {
                            var statuses: [Int] = []
                            for attempt in 0..<5 {
                                statuses.append(try await curl("\(cache.url)/v2/", extra: ["-u", "alice:guess-\(guesser)-\(attempt)"]).status)
                            }
                            return statuses
                        }
                    }
                    return try await group.reduce(into: []) { $0 += $1 }
                }
                #expect(statuses.allSatisfy { $0 == 401 || $0 == 429 }, "\(statuses)")
                // Five failures are verified; at most the other seven guessers' requests already past the check follow.
                #expect(statuses.filter { $0 == 401 }.count <= 5 + 7, "wrong passwords kept being verified: \(statuses)")
                let throttled = try await curl("\(cache.url)/v2/", extra: ["-u", "alice:one-more-guess"])
                #expect(throttled.status == 429)
                #expect(Int(throttled.headers["retry-after"] ?? "") ?? 0 > 0)
                let error = try JSONSerialization.jsonObject(with: throttled.body) as? [String: [[String: String]]]
                #expect(error?["errors"]?.first?["code"] == "TOOMANYREQUESTS")
                // The right password, verified before, is still accepted from the same address.
                #expect(try await curl("\(cache.url)/v2/", extra: ["-u", "alice:s3cret-pass"]).status == 200)
            }
        }
    }

    @Test func metricsNeedCredentialsUnlessMadePublic() async throws {
        let scratch = try ScratchDirectory()
        let passwords = try await writeAlicePasswords(scratch)
        try await withRegistryAndProxy { _, proxy in
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("private"), options: ["--htpasswd", passwords]) { cache in
                let anonymous = try await curl("\(cache.url)/metrics")
                #expect(anonymous.status == 401)
                #expect(!String(decoding: anonymous.body, as: UTF8.self).contains("slipway_cache_"))
                let authorized = try await curl("\(cache.url)/metrics", extra: ["-u", "alice:s3cret-pass"])
                #expect(authorized.status == 200 && String(decoding: authorized.body, as: UTF8.self).contains("slipway_cache_blob_hits_total"))
            }
            let options = ["--htpasswd", passwords, "--metrics-public"]
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("public"), options: options) { cache in
                let anonymous = try await curl("\(cache.url)/metrics")
                #expect(anonymous.status == 200 && String(decoding: anonymous.body, as: UTF8.self).contains("slipway_cache_blob_hits_total"))
                #expect(try await curl("\(cache.url)/v2/").status == 401)
            }
        }
    }
}

/// Raises this process's soft open-file limit to the hard limit; fails the test when even that is below `atLeast`.
private func raiseOpenFileLimit(atLeast needed: Int) throws {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { throw TestSupportError("getrlimit: \(errno)") }
    limit.rlim_cur = limit.rlim_max
    guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { throw TestSupportError("setrlimit: \(errno)") }
    guard Int(clamping: limit.rlim_cur) >= needed else {
        throw TestSupportError("the open-file hard limit \(limit.rlim_max) is below the \(needed) this test needs")
    }
}

/// A client connection on a plain POSIX socket, doing exactly what a test says (including nothing at all). The
/// blocking waits run on dispatch threads, off the concurrency pool.
final class RawConnection: @unchecked Sendable {
    private let fd: Int32
    private let closed = NSLock()
    private var isClosed = false

    /// `waitForConnect: false` leaves the connection to complete in the background, as a flood of clients would.
    init(host: String, waitForConnect: Bool = true) throws {
        fd = try connectTCP(host, waitForConnect: waitForConnect)
    }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw TestSupportError("send: \(String(cString: strerror(errno)))") }
            offset += sent
        }
    }

    /// What arrives until `marker` has (or the connection ends, or `limit` passes).
    func read(until marker: String, within limit: Duration) async throws -> String {
        let fd = self.fd
        return await offPool {
            let deadline = ContinuousClock.now + limit
            var received: [UInt8] = []
            while !String(decoding: received, as: UTF8.self).contains(marker), let chunk = Self.receive(fd, until: deadline), !chunk.isEmpty {
                received += chunk
            }
            return String(decoding: received, as: UTF8.self)
        }
    }

    /// Whether the server closes the connection within `limit`; whatever it sends before is read and dropped.
    func waitForClose(within limit: Duration) async -> Bool {
        let fd = self.fd
        return await offPool {
            let deadline = ContinuousClock.now + limit
            while let chunk = Self.receive(fd, until: deadline) {
                if chunk.isEmpty { return true }
            }
            return false
        }
    }

    /// Sends `bytes` one at a time, one every `interval`, until the server closes the connection (true) or
    /// `giveUpAfter` passes (false).
    func trickle(_ bytes: [UInt8], every interval: Duration, giveUpAfter limit: Duration) async -> Bool {
        let fd = self.fd
        return await offPool {
            let deadline = ContinuousClock.now + limit
            for byte in bytes where ContinuousClock.now < deadline {
                let sent = withUnsafeBytes(of: byte) { Glibc.send(fd, $0.baseAddress, 1, Int32(MSG_NOSIGNAL)) }
                if sent < 0 { return true }
                if let chunk = Self.receive(fd, until: min(deadline, ContinuousClock.now + interval)), chunk.isEmpty { return true }
            }
            return false
        }
    }

    /// The next bytes: empty at end of stream (or a reset), nil when `deadline` passed first.
    private static func receive(_ fd: Int32, until deadline: ContinuousClock.Instant) -> [UInt8]? {
        while true {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { return nil }
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(clamping: remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000 + 1)
            let ready = poll(&entry, 1, milliseconds)
            if ready < 0, errno == EINTR { continue }
            guard ready > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 65536)
            let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if got < 0, errno == EAGAIN || errno == EINTR { continue }
            return got <= 0 ? [] : Array(buffer[0..<got])
        }
    }

    func close() {
        closed.lock()
        defer { closed.unlock() }
        guard !isClosed else { return }
        isClosed = true
        Glibc.close(fd)
    }

    deinit { close() }
}

private func offPool<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(returning: work()) }
    }
}

/// An htpasswd file (bcrypt, as `htpasswd -B` writes) with the one user alice:s3cret-pass.
private func writeAlicePasswords(_ scratch: ScratchDirectory) async throws -> String {
    let passwords = scratch.sub("htpasswd")
    let written = try await run("htpasswd", ["-B", "-b", "-c", passwords, "alice", "s3cret-pass"])
    try #require(written.status == 0, "htpasswd: \(written.stderr)")
    return passwords
}
