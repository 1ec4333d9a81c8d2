import ContentStore
import Foundation
import OCI
import Registry
import Slipway
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// `slipway serve` against a real docker-registry upstream (behind the fault proxy, which logs what reaches
/// upstream), with real clients: skopeo, curl, Slipway's own pull.
@Suite(.tags(.integration, .slow), .serialized)
struct PullThroughCacheTests {
    /// The demo image pushed upstream as `demo:TAG`; returns its layers (the large one last).
    func publish(_ registry: RegistryProcess, _ scratch: ScratchDirectory, tag: String = "v1", version: String = "1", largeFileBytes: Int = 4 << 20)
        async throws -> (manifest: Descriptor, layers: [Descriptor])
    {
        let layout = try makeDemoLayout(scratch, largeFileBytes: largeFileBytes, version: version)
        try await withSession(try makeSession()) { session in _ = try await push(layout, to: "\(registry.host)/demo:\(tag)", session: session) }
        let manifest = try #require(try layout.image(named: "demo"))
        guard case .manifest(let document) = try ManifestDocument.decode(try layout.readBlob(manifest.digest), contentType: nil) else {
            throw TestSupportError("demo image is not a manifest")
        }
        return (manifest, document.layers.sorted { $0.size < $1.size })
    }

    func skopeoCopy(_ reference: String, to layout: String, extra: [String] = []) async throws -> ProcessResult {
        try await run("skopeo", ["copy", "-q", "--src-tls-verify=false"] + extra + ["docker://\(reference)", "oci:\(layout):x"])
    }

    @Test func clientsPullThroughTheCacheAndCachedContentOutlivesTheUpstream() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let (manifest, layers) = try await publish(registry, scratch)
            _ = try await publish(registry, scratch, tag: "v2", version: "2")
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache")) { cache in
                let copied = try await skopeoCopy("\(cache.host)/demo:v1", to: scratch.sub("skopeo"))
                #expect(copied.status == 0, "skopeo: \(copied.stderr)")
                let layout = try ContentStore(existingLayoutAt: scratch.sub("skopeo"))
                #expect(try layout.image(named: "x")?.digest == manifest.digest)

                // Slipway's own pull through the cache: the same image, and still one upstream GET per blob.
                let store = try ContentStore(root: scratch.sub("store"))
                let pulled = try await withSession(try makeSession()) { session in
                    try await Puller(session: session, store: store).pull(try ImageLocation(parsing: "\(cache.host)/demo:v1"))
                }
                #expect(pulled.0.manifestDescriptor.digest == manifest.digest)
                for layer in layers {
                    #expect(proxy.requests(matching: "/blobs/\(layer.digest)", method: "GET").count == 1, "\(layer.digest) fetched more than once")
                    #expect(try await cache.hasBlob(layer))
                }
                #expect(try await cache.metric("slipway_cache_blob_hits_total") >= Int64(layers.count))
                #expect(try await cache.metric("slipway_cache_upstream_bytes_total") >= layers.reduce(0) { $0 + $1.size })

                // Upstream down: what is cached is still served, the rest is a clear 503 in the spec's format.
                proxy.addRule(FaultRule(match: .any, fault: .serviceUnavailable, times: 1000))
                let again = try await skopeoCopy("\(cache.host)/demo:v1", to: scratch.sub("skopeo-again"))
                #expect(again.status == 0, "cached copy with upstream down: \(again.stderr)")
                let missing = try await curl("\(cache.url)/v2/demo/manifests/v2", headers: ["Accept: \(MediaType.ociManifest)"])
                #expect(missing.status == 503)
                let error = try JSONSerialization.jsonObject(with: missing.body) as? [String: [[String: String]]]
                #expect(error?["errors"]?.first?["code"] == "UNAVAILABLE")
                #expect(error?["errors"]?.first?["message"]?.contains("upstream") == true)
                proxy.removeAllRules()

                let log = try cache.accessLog()
                #expect(log.contains { $0["cache"] as? String == "miss" } && log.contains { $0["cache"] as? String == "hit" })
                #expect(log.allSatisfy { $0["status"] is Int && $0["path"] is String && $0["ms"] is Double })
            }
        }
    }

    @Test func aDamagedCachedManifestIsFetchedAgainAndABadUpstreamURLIsAUsageError() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let (manifest, _) = try await publish(registry, scratch)
            let accept = "Accept: \(MediaType.ociManifest)"
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache")) { cache in
                #expect(try await curl("\(cache.url)/v2/demo/manifests/v1", headers: [accept]).status == 200)
                // Same size, wrong bytes, as a shared filesystem could leave it.
                let path = cache.store.blobPath(manifest.digest)
                try Data(repeating: 0x20, count: Int(manifest.size)).write(to: URL(fileURLWithPath: path))
                let healed = try await curl("\(cache.url)/v2/demo/manifests/v1", headers: [accept])
                #expect(healed.status == 200 && healed.sha256 == manifest.digest.description)
                let byDigest = try await curl("\(cache.url)/v2/demo/manifests/\(manifest.digest)", headers: [accept])
                #expect(byDigest.sha256 == manifest.digest.description)
            }
        }
        let refused = try await run(slipwayBinary, ["serve", "--upstream", "ftp://example.com/x", "--root", scratch.sub("unused")])
        #expect(refused.status == 2 && refused.stderr.contains("not an http:// or https:// URL"), "\(refused.stderr)")
    }

    @Test func concurrentColdClientsShareOneUpstreamFetchAndStreamWhileItArrives() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let (_, layers) = try await publish(registry, scratch, largeFileBytes: 12 << 20)
            let large = layers.last!
            // About 1.5 s of transfer, so every client arrives while the fill runs.
            proxy.addRule(FaultRule(path: "/blobs/\(large.digest)", fault: .throttle(bytesPerSecond: 8 << 20), times: 100))
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache")) { cache in
                let results = try await withThrowingTaskGroup(of: CurlResult.self) { group in
                    for _ in 0..<16 {
                        group.addTask { try await curl("\(cache.url)/v2/demo/blobs/\(large.digest)") }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                for result in results {
                    #expect(result.status == 200 && result.sha256 == large.digest.description)
                }
                #expect(proxy.requests(matching: "/blobs/\(large.digest)", method: "GET").count == 1)
                #expect(try await cache.metric("slipway_cache_upstream_bytes_total") == large.size)
                #expect(try await cache.metric("slipway_cache_fills_started_total") == 1)
                // Streaming, not store-and-forward: first bytes arrive long before the last.
                let streamed = results.filter { $0.timeToFirstByte < $0.total / 2 }
                #expect(streamed.count >= 12, "time to first byte vs total: \(results.map { ($0.timeToFirstByte, $0.total) })")
            }
        }
    }

    @Test func aRangeOnAColdBlobIsAnsweredWithoutWaitingForTheWholeBlob() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let (_, layers) = try await publish(registry, scratch, largeFileBytes: 12 << 20)
            let large = layers.last!
            // The whole blob would take 6 s at this rate.
            proxy.addRule(FaultRule(path: "/blobs/\(large.digest)", fault: .throttle(bytesPerSecond: 2 << 20), times: 100))
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache")) { cache in
                let tail = try await curl("\(cache.url)/v2/demo/blobs/\(large.digest)", headers: ["Range: bytes=-4096"])
                let direct = try await curl("\(registry.url.absoluteString)/v2/demo/blobs/\(large.digest)", headers: ["Range: bytes=-4096"])
                #expect(tail.status == 206 && tail.body == direct.body && tail.body.count == 4096)
                #expect(tail.headers["content-range"] == "bytes \(large.size - 4096)-\(large.size - 1)/\(large.size)")
                #expect(tail.total < 3, "the range waited for the fill: \(tail.total) s")
                #expect(try await cache.metric("slipway_cache_range_passthrough_total") == 1)
                // Two ranges at once, one near the start (answered from the fill), as multipart.
                let parts = try await curl("\(cache.url)/v2/demo/blobs/\(large.digest)", headers: ["Range: bytes=0-99,\(large.size - 100)-"])
                #expect(parts.status == 206 && parts.headers["content-type"]?.hasPrefix("multipart/byteranges") == true)
                // The fill goes on in the background and commits the verified blob.
                #expect(try await cache.hasBlob(large, within: .seconds(30)))
                #expect(try await curl("\(cache.url)/v2/demo/blobs/\(large.digest)").sha256 == large.digest.description)
            }
        }
    }

    @Test func wrongBytesFromUpstreamAreNeverCachedNorCompleted() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let (_, layers) = try await publish(registry, scratch)
            let large = layers.last!
            proxy.addRule(FaultRule(path: "/blobs/\(large.digest)", fault: .flipByte(at: 1000), times: 100))
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache")) { cache in
                let poisoned = try await curl("\(cache.url)/v2/demo/blobs/\(large.digest)")
                // The connection is cut before the last byte: curl reports a partial transfer, never a whole wrong blob.
                #expect(poisoned.exitCode != 0)
                #expect(poisoned.body.count < large.size)
                // The fill retries the transfer a few times before it gives up; it never commits.
                let deadline = ContinuousClock.now + .seconds(20)
                while try await cache.metric("slipway_cache_fills_failed_total") == 0, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(try await cache.metric("slipway_cache_fills_failed_total") == 1)
                #expect(!FileManager.default.fileExists(atPath: cache.store.blobPath(large.digest)))
                proxy.removeAllRules()
                let healed = try await curl("\(cache.url)/v2/demo/blobs/\(large.digest)")
                #expect(healed.status == 200 && healed.sha256 == large.digest.description)
                #expect(try await cache.hasBlob(large))
            }
        }
    }

    @Test func aStalledUpstreamFailsWaitingClientsInBoundedTimeAndTheNextRequestRetries() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let (_, layers) = try await publish(registry, scratch)
            let large = layers.last!
            proxy.addRule(FaultRule(method: "GET", path: "/blobs/\(large.digest)", fault: .stall(seconds: 60), times: 1))
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache"), options: ["--upstream-timeout", "2"]) {
                cache in
                let stalled = try await withThrowingTaskGroup(of: CurlResult.self) { group in
                    for _ in 0..<3 { group.addTask { try await curl("\(cache.url)/v2/demo/blobs/\(large.digest)") } }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                #expect(stalled.allSatisfy { $0.exitCode != 0 || $0.status >= 500 }, "\(stalled.map { ($0.exitCode, $0.status) })")
                // curl's own clock: the test process's clock would also count the time its one pool thread spent on
                // other tests before it saw the clients end (9.5 s once in CI for a 2 s wait).
                let waited = stalled.map(\.total).max() ?? 0
                #expect(waited > 0 && waited < 8, "clients waited \(waited) s")
                #expect(!cache.store.hasBlob(large))
                let retried = try await curl("\(cache.url)/v2/demo/blobs/\(large.digest)")
                #expect(retried.status == 200 && retried.sha256 == large.digest.description)
            }
        }
    }

    @Test func hostileRequestsGetClientErrorsAndTouchNothingOutsideTheRoot() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let (_, layers) = try await publish(registry, scratch)
            let blob = layers.last!
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache")) { cache in
                let before = try FileManager.default.contentsOfDirectory(atPath: scratch.path).sorted()
                let base = "\(cache.url)/v2"
                let probes: [(String, [String], Int)] = [
                    ("\(base)/demo/blobs/sha256:1234", [], 400),
                    ("\(base)/demo/blobs/md5:\(String(repeating: "0", count: 32))", [], 400),
                    ("\(base)/demo/manifests/..%2f..%2fetc", [], 400),
                    ("\(base)/../../etc/passwd/blobs/\(blob.digest)", [], 400),
                    ("\(base)/demo/../../../tmp/manifests/latest", [], 400),
                    ("\(base)/Demo/manifests/v1", [], 400),
                    ("\(base)/\(String(repeating: "a/", count: 200))x/manifests/v1", [], 400),
                    ("\(base)/demo/blobs/\(blob.digest)", ["Range: bytes=99999999999999999999-"], 416),
                    ("\(base)/demo/blobs/\(blob.digest)", ["Range: bytes=50-10"], 416),
                    ("\(base)/demo/blobs/\(blob.digest)", ["Range: bytes=" + (0..<100).map { "\($0 * 10)-\($0 * 10 + 5)" }.joined(separator: ",")], 416),
                    ("\(base)/demo/blobs/\(blob.digest)", ["Range: bytes=\(blob.size + 10)-"], 416),
                    ("\(base)/demo/blobs/sha256:\(String(repeating: "0", count: 64))", [], 404),
                ]
                for (url, headers, expected) in probes {
                    let answer = try await curl(url, headers: headers)
                    #expect(answer.status == expected, "\(url) \(headers.first?.prefix(60) ?? ""): \(answer.status)")
                }
                for method in ["PUT", "POST", "DELETE", "PATCH"] {
                    #expect(try await curl("\(base)/demo/blobs/uploads/", method: method).status == 405)
                }
                // Not HTTP, an enormous header, a request line with a NUL: the connection gets 400 or is closed.
                for raw in [
                    Array("\u{16}\u{03}\u{01}garbage\r\n\r\n".utf8), Array("GET /v2/ HTTP/1.1\r\nX: \(String(repeating: "a", count: 200_000))\r\n\r\n".utf8),
                    Array("GET /v2/\u{0}x HTTP/1.1\r\nHost: a\r\n\r\n".utf8),
                ] {
                    let answer = try await rawExchange(host: cache.host, raw)
                    #expect(answer.isEmpty || answer.hasPrefix("HTTP/1.1 4"), "\(answer.prefix(80))")
                }
                // Still serving, and nothing appeared beside the store.
                #expect(try await curl("\(base)/").status == 200)
                #expect(try await curl("\(base)/demo/blobs/\(blob.digest)").sha256 == blob.digest.description)
                #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).sorted() == before)
            }
        }
    }

    @Test(.enabled(if: geteuid() == 0, "mounts a small tmpfs"))
    func aFullDiskFailsTheFillAndLeavesNoBlob() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let (_, layers) = try await publish(registry, scratch, largeFileBytes: 6 << 20)
            let large = layers.last!
            let root = scratch.sub("small")
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            #expect(try await run("/bin/mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", root]).status == 0)
            defer { detachMount(root) }
            try await withCache(upstream: proxy.url.absoluteString, root: "\(root)/cache") { cache in
                let answer = try await curl("\(cache.url)/v2/demo/blobs/\(large.digest)")
                #expect(answer.exitCode != 0 || answer.status >= 500)
                #expect(!FileManager.default.fileExists(atPath: cache.store.blobPath(large.digest)))
                #expect(try await cache.metric("slipway_cache_fills_failed_total") >= 1)
                // Small blobs still fit and are served.
                let small = layers.first!
                #expect(try await curl("\(cache.url)/v2/demo/blobs/\(small.digest)").sha256 == small.digest.description)
            }
        }
    }

    /// Both sides of the TTL without waiting one out: a cache whose TTL cannot pass during the test (an hour), then
    /// one on the same store whose TTL has always passed (0), so what is asserted is whether a revalidation reached
    /// upstream (the proxy's log), never how long a TTL lasted on a loaded machine.
    @Test func tagsAreRevalidatedAfterTheirTTLAndServedStaleWhenUpstreamIsDown() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let first = try await publish(registry, scratch, tag: "stable", version: "1").manifest
            let accept = "Accept: \(MediaType.manifestAccept.joined(separator: ", "))"
            let second = try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache"), options: ["--tag-ttl", "3600"]) { cache in
                let url = "\(cache.url)/v2/demo/manifests/stable"
                #expect(try await curl(url, headers: [accept]).headers["docker-content-digest"] == first.digest.description)
                let second = try await publish(registry, scratch, tag: "stable", version: "2").manifest
                // Within the TTL the cached tag is served without asking upstream.
                proxy.clearLog()
                #expect(try await curl(url, headers: [accept]).headers["docker-content-digest"] == first.digest.description)
                #expect(proxy.requestLog.isEmpty)
                return second
            }
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache"), options: ["--tag-ttl", "0"]) { cache in
                let url = "\(cache.url)/v2/demo/manifests/stable"
                // Past the TTL, a HEAD finds the new digest, which is fetched by digest.
                proxy.clearLog()
                let moved = try await curl(url, headers: [accept])
                #expect(moved.headers["docker-content-digest"] == second.digest.description)
                #expect(proxy.requests(matching: "/manifests/stable", method: "HEAD").count == 1)
                #expect(proxy.requests(matching: "/manifests/stable", method: "GET").isEmpty)
                #expect(proxy.requests(matching: "/manifests/\(second.digest)", method: "GET").count == 1)
                // Past it again with the tag unchanged: another HEAD, and nothing fetched.
                proxy.clearLog()
                #expect(try await curl(url, headers: [accept]).headers["docker-content-digest"] == second.digest.description)
                #expect(proxy.requests(matching: "/manifests/", method: "HEAD").count == 1)
                #expect(proxy.requests(matching: "/manifests/", method: "GET").isEmpty)
                // Upstream down past the TTL: the cached tag keeps working.
                proxy.addRule(FaultRule(match: .any, fault: .serviceUnavailable, times: 1000))
                let stale = try await curl(url, headers: [accept])
                #expect(stale.status == 200 && stale.headers["docker-content-digest"] == second.digest.description)
                #expect(try await cache.metric("slipway_cache_stale_manifests_served_total") == 1)
                // A client that accepts only a type the manifest is not gets MANIFEST_UNKNOWN, as from distribution.
                #expect(try await curl(url, headers: ["Accept: \(MediaType.ociIndex)"]).status == 404)
            }
        }
    }

    @Test func namespacesSelectTheUpstreamAndUnknownOnesAreRefused() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let (manifest, _) = try await publish(registry, scratch)
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache")) { cache in
                let named = try await curl("\(cache.url)/v2/demo/manifests/v1?ns=\(proxy.host)", headers: ["Accept: \(MediaType.ociManifest)"])
                #expect(named.status == 200 && named.headers["oci-namespace"] == proxy.host)
                #expect(named.headers["docker-content-digest"] == manifest.digest.description)
                let other = try await curl("\(cache.url)/v2/demo/manifests/v1?ns=ghcr.io")
                #expect(other.status == 404)
                #expect(String(decoding: other.body, as: UTF8.self).contains("NAME_UNKNOWN"))
                let tags = try await curl("\(cache.url)/v2/demo/tags/list")
                #expect(String(decoding: tags.body, as: UTF8.self).contains("\"v1\""))
            }
        }
    }

    @Test func theSizeLimitEvictsLeastRecentlyUsedBlobs() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            // Different sizes, so the two images share no large layer.
            _ = try await publish(registry, scratch, tag: "v1", version: "1", largeFileBytes: 3 << 20)
            _ = try await publish(registry, scratch, tag: "v2", version: "2", largeFileBytes: 5 << 19)
            let limit: Int64 = 4 << 20
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache"), options: ["--max-size", "4M"]) { cache in
                let first = try await skopeoCopy("\(cache.host)/demo:v1", to: scratch.sub("a"))
                let second = try await skopeoCopy("\(cache.host)/demo:v2", to: scratch.sub("b"))
                #expect(first.status == 0 && second.status == 0, "\(first.stderr) \(second.stderr)")
                #expect(try await cache.metric("slipway_cache_evicted_blobs_total") > 0)
                #expect(try await cache.metric("slipway_cache_store_bytes") <= limit)
                // Evicted content is fetched again on demand.
                let again = try await skopeoCopy("\(cache.host)/demo:v1", to: scratch.sub("c"))
                #expect(again.status == 0, "\(again.stderr)")
            }
        }
    }

    @Test func clientsMustAuthenticateWhenTheServerRequiresIt() async throws {
        let scratch = try ScratchDirectory()
        let passwords = scratch.sub("htpasswd")
        #expect(try await run("htpasswd", ["-B", "-b", "-c", passwords, "alice", "s3cret-pass"]).status == 0)
        try await withRegistryAndProxy { registry, proxy in
            _ = try await publish(registry, scratch)
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache"), options: ["--htpasswd", passwords]) { cache in
                let anonymous = try await curl("\(cache.url)/v2/")
                #expect(anonymous.status == 401 && anonymous.headers["www-authenticate"]?.hasPrefix("Basic") == true)
                #expect(try await skopeoCopy("\(cache.host)/demo:v1", to: scratch.sub("denied")).status != 0)
                let allowed = try await skopeoCopy("\(cache.host)/demo:v1", to: scratch.sub("allowed"), extra: ["--src-creds", "alice:s3cret-pass"])
                #expect(allowed.status == 0, "\(allowed.stderr)")
                #expect(try await curl("\(cache.url)/v2/", extra: ["-u", "alice:wrong"]).status == 401)
            }
        }
    }

    @Test func theCacheAuthenticatesToATokenProtectedUpstream() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            _ = try await publish(registry, scratch)
            proxy.enableTokenAuth(username: "puller", password: "pull-secret", tokenLifetime: 300)
            // Without credentials upstream refuses the cache, and the client is told so (not "not found").
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("anonymous")) { cache in
                let refused = try await curl("\(cache.url)/v2/demo/manifests/v1", headers: ["Accept: \(MediaType.ociManifest)"])
                #expect(refused.status == 502)
                #expect(String(decoding: refused.body, as: UTF8.self).contains("refused"))
            }
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache"), options: ["--creds", "puller:pull-secret"]) { cache in
                let copied = try await skopeoCopy("\(cache.host)/demo:v1", to: scratch.sub("out"))
                #expect(copied.status == 0, "\(copied.stderr)")
                #expect(proxy.tokenRequestCount() >= 1)
            }
        }
    }

    @Test func aGracefulStopLetsRunningDownloadsFinish() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let (_, layers) = try await publish(registry, scratch, largeFileBytes: 6 << 20)
            let large = layers.last!
            proxy.addRule(FaultRule(path: "/blobs/\(large.digest)", fault: .throttle(bytesPerSecond: 4 << 20), times: 100))
            let cache = try await RunningCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache"), options: [])
            async let download = curl("\(cache.url)/v2/demo/blobs/\(large.digest)")
            // Running: the first bytes of the blob (throttled to take over a second) have come from upstream.
            try await waitUntil("the blob is on its way") {
                proxy.requests(matching: "/blobs/\(large.digest)", method: "GET").contains { $0.responseBodyBytes > 0 }
            }
            let status = await cache.stop()
            let finished = try await download
            #expect(status == 0)
            #expect(finished.status == 200 && finished.sha256 == large.digest.description)
            #expect(try await curl("\(cache.url)/v2/").exitCode != 0, "still accepting connections after stop")
        }
    }
}
