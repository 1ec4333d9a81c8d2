import Foundation
import OCI
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A registry that answers with hostile numbers and links. `slipway inspect` must fail with exit status 1 and a
/// message naming the problem (never die of a signal); `slipway serve` must answer each hostile upstream reply with
/// an error and go on serving everyone else.
@Suite(.tags(.integration), .serialized)
struct HostileRegistryTests {
    // MARK: Documents

    static let layerType = "application/vnd.oci.image.layer.v1.tar+gzip"

    /// A config naming `layers` diffIDs (any digest: inspect does not fetch layers).
    static func config(layers: Int) -> [UInt8] {
        let diffIDs = (0..<layers).map { "\"sha256:\(String(repeating: String($0 % 10), count: 64))\"" }.joined(separator: ",")
        return Array(#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[\#(diffIDs)]}}"#.utf8)
    }

    /// A manifest of `config` and layers of these digests and sizes; the sizes are written as given, so they can
    /// be anything a hostile registry sends.
    static func manifest(config: [UInt8], layers: [(digest: String, size: String)]) -> [UInt8] {
        let layerList = layers.map { #"{"mediaType":"\#(layerType)","digest":"\#($0.digest)","size":\#($0.size)}"# }.joined(separator: ",")
        return Array(
            #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\#(Digest.sha256(of: config))","size":\#(config.count)},"layers":[\#(layerList)]}"#
                .utf8)
    }

    static func blobDigest(_ seed: String) -> String { Digest.sha256(of: Array(seed.utf8)).description }

    /// Routes serving `repository:v1` as `manifest` (by tag and digest) and its config blob.
    static func image(_ repository: String, manifest: [UInt8], config: [UInt8]) -> [HostileRoute] {
        let headers = [("Content-Type", "application/vnd.oci.image.manifest.v1+json"), ("Docker-Content-Digest", Digest.sha256(of: manifest).description)]
        return [
            .path("/v2/\(repository)/manifests/v1", headers: headers, bytes: manifest),
            .path("/v2/\(repository)/manifests/\(Digest.sha256(of: manifest))", headers: headers, bytes: manifest),
            .path("/v2/\(repository)/blobs/\(Digest.sha256(of: config))", headers: [("Content-Type", "application/octet-stream")], bytes: config),
        ]
    }

    /// A well-formed one-layer image.
    static func goodImage(_ repository: String) -> [HostileRoute] {
        let config = config(layers: 1)
        return image(repository, manifest: manifest(config: config, layers: [(blobDigest("layer"), "10")]), config: config)
    }

    static let base: [HostileRoute] = [.path("/v2/", headers: [("Content-Type", "application/json")], body: "{}")]

    /// A token endpoint whose tokens claim to live 1e300 seconds.
    static let everlastingToken = HostileRoute(.exact("/token")) { _ in
        HostileResponse(headers: [("Content-Type", "application/json")], body: #"{"token":"hostile","expires_in":1e300}"#)
    }

    /// A Unix socket path short enough for sun_path.
    static func socketPath() -> String { "/tmp/hostile-\(UUID().uuidString.prefix(8)).sock" }

    /// A token realm on a Unix socket, as AsyncHTTPClient spells it.
    static func unixRealm(_ socket: String) -> String {
        "http+unix://\(socket.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)/token"
    }

    // MARK: slipway inspect

    func inspect(_ server: HostileRegistry, _ repository: String) async throws -> ProcessResult {
        let scratch = try ScratchDirectory()
        return try await run(slipwayBinary, ["inspect", "--store", scratch.sub("store"), "--plain-http", "\(server.host)/\(repository):v1"])
    }

    /// Exit status exactly 1 (a signal would show as its number) and stderr naming the problem.
    func expectCleanFailure(_ result: ProcessResult, naming problem: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(result.status == 1, "exit status \(result.status); stderr: \(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stderr.contains(problem), "stderr: \(result.stderr)", sourceLocation: sourceLocation)
    }

    @Test func inspectRejectsANegativeLayerSize() async throws {
        let config = Self.config(layers: 1)
        let manifest = Self.manifest(config: config, layers: [(Self.blobDigest("layer"), "-1")])
        try await HostileRegistry.withServer(routes: Self.base + Self.image("neg", manifest: manifest, config: config)) { server in
            expectCleanFailure(try await inspect(server, "neg"), naming: "size -1 is negative")
        }
    }

    @Test func inspectRejectsLayerSizesWhoseSumOverflows() async throws {
        let config = Self.config(layers: 2)
        let manifest = Self.manifest(config: config, layers: [(Self.blobDigest("a"), "9223372036854775807"), (Self.blobDigest("b"), "1")])
        try await HostileRegistry.withServer(routes: Self.base + Self.image("sum", manifest: manifest, config: config)) { server in
            expectCleanFailure(try await inspect(server, "sum"), naming: "layer sizes add up to more than")
        }
    }

    @Test func inspectUsesATokenThatClaimsToLiveForEver() async throws {
        let routes = [HostileRoute.bearerChallenge(), Self.everlastingToken] + Self.base + Self.goodImage("auth")
        try await HostileRegistry.withServer(routes: routes) { server in
            let result = try await inspect(server, "auth")
            #expect(result.status == 0, "exit status \(result.status); stderr: \(result.stderr)")
            #expect(result.stdout.contains("Layers:     1"), "stdout: \(result.stdout)")
            #expect(server.requests(pathPrefix: "/token").count == 1)
        }
    }

    @Test func inspectRefusesATokenRealmOnAUnixSocket() async throws {
        let socket = Self.socketPath()
        defer { unlink(socket) }
        let routes = [HostileRoute.bearerChallenge(realm: Self.unixRealm(socket)), Self.everlastingToken] + Self.base + Self.goodImage("unix")
        try await HostileRegistry.withServer(routes: routes, unixSocketPath: socket) { server in
            expectCleanFailure(try await inspect(server, "unix"), naming: "is not an http:// or https:// URL")
            #expect(server.requests(pathPrefix: "/token").isEmpty, "the realm on the socket was asked for a token")
        }
    }

    // MARK: slipway serve

    /// A GET through the cache (curl, bounded so a server that never answers fails the test instead of hanging it).
    func get(_ cache: RunningCache, _ path: String, headers: [String] = []) async throws -> CurlResult {
        try await curl("\(cache.url)\(path)", headers: headers, extra: ["--max-time", "120"])
    }

    /// The serve process is still up and answering: a crash on the previous request would show here.
    func expectServing(_ cache: RunningCache, after what: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let base = try await get(cache, "/v2/")
        #expect(base.status == 200, "slipway serve no longer answers after \(what) (curl exit \(base.exitCode))", sourceLocation: sourceLocation)
        let good = try await get(cache, "/v2/good/manifests/v1")
        #expect(good.status == 200, "a good manifest after \(what): HTTP \(good.status)", sourceLocation: sourceLocation)
    }

    /// An error answer in the distribution spec's format with this status.
    func expectErrorAnswer(_ result: CurlResult, status: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(result.status == status, "HTTP \(result.status): \(String(decoding: result.body, as: UTF8.self))", sourceLocation: sourceLocation)
        let body = try? JSONSerialization.jsonObject(with: result.body) as? [String: Any]
        #expect((body?["errors"] as? [Any])?.isEmpty == false, "not a distribution error body", sourceLocation: sourceLocation)
    }

    /// `slipway serve` in front of a hostile registry scripted with `routes` (plus `/v2/` and a good image).
    func withHostileCache(
        routes: [HostileRoute], unixSocketPath: String? = nil, _ body: (HostileRegistry, RunningCache) async throws -> Void
    ) async throws {
        let scratch = try ScratchDirectory()
        try await HostileRegistry.withServer(routes: routes + Self.base + Self.goodImage("good"), unixSocketPath: unixSocketPath) { server in
            try await withCache(upstream: server.url, root: scratch.sub("cache")) { cache in
                try await expectServing(cache, after: "starting")
                try await body(server, cache)
            }
        }
    }

    static let tagList = #"{"name":"x","tags":["a"]}"#

    @Test func serveRefusesAManifestWithANegativeLayerSizeAndItsBlob() async throws {
        let config = Self.config(layers: 1)
        let layer = Self.blobDigest("negative")
        try await withHostileCache(routes: Self.image("neg", manifest: Self.manifest(config: config, layers: [(layer, "-1")]), config: config)) {
            _, cache in
            // The manifest is refused whole; its layer is then unknown to the cache, and upstream has no such blob.
            expectErrorAnswer(try await get(cache, "/v2/neg/manifests/v1"), status: 502)
            expectErrorAnswer(try await get(cache, "/v2/neg/blobs/\(layer)"), status: 404)
            try await expectServing(cache, after: "a layer of size -1")
        }
    }

    @Test func serveSurvivesRangesSummingBeyondInt64OnAHugeBlob() async throws {
        let config = Self.config(layers: 1)
        let layer = Self.blobDigest("huge")
        let routes = Self.image("huge", manifest: Self.manifest(config: config, layers: [(layer, "9223372036854775807")]), config: config)
        try await withHostileCache(routes: routes) { _, cache in
            #expect(try await get(cache, "/v2/huge/manifests/v1").status == 200)
            // Served whole, as far as upstream goes (here not at all: the transfer is cut).
            _ = try await get(cache, "/v2/huge/blobs/\(layer)", headers: ["Range: bytes=0-,0-"])
            try await expectServing(cache, after: "ranges summing beyond Int64.max")
        }
    }

    @Test func serveRejectsAnUpstreamContentRangeEndingAtInt64Max() async throws {
        let config = Self.config(layers: 1)
        let layer = Self.blobDigest("ranged")
        // 100 MB: ranges far beyond what the fill has are fetched upstream as ranges.
        let nearMaxRange = HostileRoute(.exact("/v2/ranged/blobs/\(layer)"), condition: { $0.header("Range") != nil }) { _ in
            HostileResponse(
                status: 206,
                headers: [("Content-Type", "application/octet-stream"), ("Content-Range", "bytes 0-9223372036854775807/9223372036854775807")],
                body: String(repeating: "x", count: 20))
        }
        let routes = [nearMaxRange] + Self.image("ranged", manifest: Self.manifest(config: config, layers: [(layer, "100000000")]), config: config)
        try await withHostileCache(routes: routes) { server, cache in
            #expect(try await get(cache, "/v2/ranged/manifests/v1").status == 200)
            let ranged = try await get(cache, "/v2/ranged/blobs/\(layer)", headers: ["Range: bytes=50000000-50000009,60000000-60000009"])
            expectErrorAnswer(ranged, status: 502)
            #expect(!server.requests(pathPrefix: "/v2/ranged/blobs/").filter { $0.header("Range") != nil }.isEmpty)
            try await expectServing(cache, after: "an upstream Content-Range ending at Int64.max")
        }
    }

    @Test func serveRejectsAMalformedLinkHeader() async throws {
        let routes: [HostileRoute] = [.path("/v2/links/tags/list", headers: [("Link", ">/v2/links/tags/list?last=a<; rel=\"next\"")], body: Self.tagList)]
        try await withHostileCache(routes: routes) { _, cache in
            expectErrorAnswer(try await get(cache, "/v2/links/tags/list"), status: 502)
            try await expectServing(cache, after: "a malformed Link header")
        }
    }

    @Test func serveStopsTagPaginationThatLoops() async throws {
        let routes: [HostileRoute] = [.path("/v2/loop/tags/list", headers: [("Link", "</v2/loop/tags/list?n=1000>; rel=\"next\"")], body: Self.tagList)]
        try await withHostileCache(routes: routes) { server, cache in
            expectErrorAnswer(try await get(cache, "/v2/loop/tags/list"), status: 502)
            #expect(server.requests(pathPrefix: "/v2/loop/tags/list").count == 1)
            try await expectServing(cache, after: "tag pagination that loops")
        }
    }

    @Test func serveStopsTagPaginationThatNeverEnds() async throws {
        let endlessPages = HostileRoute(.exact("/v2/endless/tags/list")) { request in
            let page = Int(request.uri.split(separator: "=").last ?? "") ?? 0
            return HostileResponse(headers: [("Link", "</v2/endless/tags/list?n=1000&last=\(page + 1)>; rel=\"next\"")], body: Self.tagList)
        }
        try await withHostileCache(routes: [endlessPages]) { server, cache in
            expectErrorAnswer(try await get(cache, "/v2/endless/tags/list"), status: 502)
            #expect(server.requests(pathPrefix: "/v2/endless/tags/list").count == 1000)
            try await expectServing(cache, after: "tag pagination that never ends")
        }
    }

    @Test func serveStopsTagPaginationWhenTheClientHangsUp() async throws {
        // Slow endless pages (50 ms each, 1000 pages: about 50 s) so the client can leave in the middle.
        let slowPages = HostileRoute(.exact("/v2/slow/tags/list")) { request in
            usleep(50_000)
            let page = Int(request.uri.split(separator: "=").last ?? "") ?? 0
            return HostileResponse(headers: [("Link", "</v2/slow/tags/list?n=1000&last=\(page + 1)>; rel=\"next\"")], body: Self.tagList)
        }
        try await withHostileCache(routes: [slowPages]) { server, cache in
            let pages = { server.requests(pathPrefix: "/v2/slow/tags/list").count }
            let fd = try connectTCP(cache.host)
            let request = Array("GET /v2/slow/tags/list HTTP/1.1\r\nHost: \(cache.host)\r\n\r\n".utf8)
            _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            let started = ContinuousClock.now
            while pages() < 3, ContinuousClock.now - started < .seconds(60) { try await Task.sleep(for: .milliseconds(20)) }
            try #require(pages() >= 3, "the cache never started paginating")
            close(fd)
            // Once the client is gone the pages stop: wait until no page was asked for 2 s (at most 40 s).
            var last = pages()
            var quietSince = ContinuousClock.now
            let left = ContinuousClock.now
            while ContinuousClock.now - quietSince < .seconds(2), ContinuousClock.now - left < .seconds(40) {
                try await Task.sleep(for: .milliseconds(100))
                if pages() != last { (last, quietSince) = (pages(), ContinuousClock.now) }
            }
            #expect(ContinuousClock.now - quietSince >= .seconds(2), "pagination went on after the client left: \(pages()) pages")
            #expect(pages() < 1000)
            try await expectServing(cache, after: "a client that left during tag pagination")
        }
    }

    @Test func serveDoesNotFollowTagPaginationToAnotherHost() async throws {
        try await HostileRegistry.withServer(routes: Self.base) { elsewhere in
            let link = "<\(elsewhere.url)/v2/away/tags/list?last=a>; rel=\"next\""
            try await withHostileCache(routes: [.path("/v2/away/tags/list", headers: [("Link", link)], body: Self.tagList)]) { _, cache in
                expectErrorAnswer(try await get(cache, "/v2/away/tags/list"), status: 502)
                #expect(elsewhere.requests.isEmpty, "a Link led the cache to another host")
                try await expectServing(cache, after: "tag pagination that leaves the registry")
            }
        }
    }

    @Test func serveUsesATokenThatClaimsToLiveForEver() async throws {
        try await withHostileCache(routes: [.bearerChallenge(prefix: "/v2/auth/"), Self.everlastingToken] + Self.goodImage("auth")) { server, cache in
            let authorized = try await get(cache, "/v2/auth/manifests/v1")
            #expect(authorized.status == 200, "HTTP \(authorized.status): \(String(decoding: authorized.body, as: UTF8.self))")
            #expect(server.requests(pathPrefix: "/token").count == 1)
            try await expectServing(cache, after: "a token with expires_in 1e300")
        }
    }

    @Test func serveRefusesATokenRealmOnAUnixSocket() async throws {
        let socket = Self.socketPath()
        defer { unlink(socket) }
        let routes = [.bearerChallenge(prefix: "/v2/unix/", realm: Self.unixRealm(socket)), Self.everlastingToken] + Self.goodImage("unix")
        try await withHostileCache(routes: routes, unixSocketPath: socket) { server, cache in
            expectErrorAnswer(try await get(cache, "/v2/unix/manifests/v1"), status: 502)
            #expect(server.requests(pathPrefix: "/token").isEmpty, "the realm on the socket was asked for a token")
            try await expectServing(cache, after: "a token realm on a Unix socket")
        }
    }
}
