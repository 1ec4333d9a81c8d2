@testable import CacheServer
import Testing
import TestSupport

@Suite(.tags(.unit)) struct RegistryRouteTests {
    func route(_ path: String) -> Result<RegistryRoute, RegistryRoute.Rejection> {
        Result { () throws(RegistryRoute.Rejection) in try RegistryRoute(path: Substring(path)) }
    }

    @Test func validPaths() throws {
        let digest = "sha256:" + String(repeating: "a", count: 64)
        #expect(try route("/v2/").get() == .base)
        #expect(try route("/v2").get() == .base)
        #expect(try route("/metrics").get() == .metrics)
        #expect(try route("/v2/library/ubuntu/manifests/22.04").get() == .manifest(name: "library/ubuntu", reference: .tag("22.04")))
        #expect(try route("/v2/a/b-c/d__e/blobs/\(digest)").get() == .blob(name: "a/b-c/d__e", digest: try .init(digest)))
        #expect(try route("/v2/org/app/tags/list").get() == .tags(name: "org/app"))
    }

    @Test(arguments: [
        ("/v2/../etc/manifests/x", "NAME_INVALID"), ("/v2/a/%2e%2e/manifests/x", "NAME_INVALID"), ("/v2/UPPER/manifests/x", "NAME_INVALID"),
        ("/v2/a--/manifests/x", "NAME_INVALID"), ("/v2/a/manifests/.hidden", "MANIFEST_INVALID"), ("/v2/a/blobs/sha256:12", "DIGEST_INVALID"),
        ("/v2/a/manifests/sha256:zz", "DIGEST_INVALID"), ("/v2/a/uploads/x", "NOT_FOUND"), ("/etc/passwd", "NOT_FOUND"),
        ("/v2//manifests/x", "NOT_FOUND"),
    ])
    func rejectedPaths(path: String, code: String) {
        guard case .failure(let rejection) = route(path) else {
            Issue.record("\(path) was accepted")
            return
        }
        #expect(rejection.code == code, "\(path)")
    }
}
