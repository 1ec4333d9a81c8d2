import Testing
import TestSupport
@testable import Registry

/// A mirror is asked for every registry's content with containerd's `?ns=REGISTRY`, with the mirror's credentials.
@Suite(.tags(.unit)) struct RegistryMirrorTests {
    @Test func mirrorsAreHTTPURLsOfAHostAndPortOnly() throws {
        let cache = try RegistryMirror(parsing: "http://cache.cluster.local:5050")
        #expect(cache.host == "cache.cluster.local:5050" && cache.plainHTTP)
        #expect(try RegistryMirror(parsing: "https://[fd00::1]:443/").host == "[fd00::1]:443")
        for bad in ["cache:5050", "ftp://cache", "http://cache/v2", "http://cache?x=1", "http://user:pw@cache", "http://"] {
            #expect(throws: RegistryError.self, "\(bad)") { try RegistryMirror(parsing: bad) }
        }
    }

    @Test func requestsGoToTheMirrorNamingTheRegistry() async throws {
        let http = try RegistryClient.makeHTTPClient()
        let credentials = StaticCredentials([:])
        let mirrored = RegistryClient(
            registry: "docker.io", through: try RegistryMirror(parsing: "http://cache.cluster.local:5050"), credentials: credentials, http: http)
        #expect(mirrored.resolve("/v2/library/debian/manifests/12") == "http://cache.cluster.local:5050/v2/library/debian/manifests/12?ns=docker.io")
        #expect(mirrored.resolve("/v2/library/debian/tags/list?n=1000") == "http://cache.cluster.local:5050/v2/library/debian/tags/list?n=1000&ns=docker.io")
        // An absolute URL (an upload location, a pagination link) is the server's own choice.
        #expect(mirrored.resolve("http://elsewhere/v2/x") == "http://elsewhere/v2/x")
        // --plain-http is about the registries: an https mirror stays https.
        let secure = RegistryClient(
            registry: "docker.io", through: try RegistryMirror(parsing: "https://cache.example"), plainHTTP: true, credentials: credentials, http: http)
        #expect(secure.resolve("/v2/x/manifests/y") == "https://cache.example/v2/x/manifests/y?ns=docker.io")
        let direct = RegistryClient(registry: "registry.example:5000", credentials: credentials, http: http)
        #expect(direct.resolve("/v2/x/blobs/sha256:00") == "https://registry.example:5000/v2/x/blobs/sha256:00")
        try await http.shutdown()
    }
}
