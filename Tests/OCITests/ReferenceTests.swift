import Testing
import TestSupport
@testable import OCI

@Suite(.tags(.unit)) struct ReferenceTests {
    struct Case: Sendable, CustomStringConvertible {
        let input: String, registry: String, repository: String, tag: String?, digest: String?
        var description: String { input }
    }

    static let hex = String(repeating: "a", count: 64)
    static let cases: [Case] = [
        Case(input: "ubuntu", registry: "docker.io", repository: "library/ubuntu", tag: "latest", digest: nil),
        Case(input: "docker://ubuntu:22.04", registry: "docker.io", repository: "library/ubuntu", tag: "22.04", digest: nil),
        Case(input: "user/app", registry: "docker.io", repository: "user/app", tag: "latest", digest: nil),
        Case(input: "index.docker.io/library/busybox:1", registry: "docker.io", repository: "library/busybox", tag: "1", digest: nil),
        Case(input: "localhost:5000/etl:v1", registry: "localhost:5000", repository: "etl", tag: "v1", digest: nil),
        Case(input: "localhost/etl", registry: "localhost", repository: "etl", tag: "latest", digest: nil),
        Case(input: "127.0.0.1:5000/a/b/c:v_1.2-x", registry: "127.0.0.1:5000", repository: "a/b/c", tag: "v_1.2-x", digest: nil),
        Case(input: "ghcr.io/org/app@sha256:\(hex)", registry: "ghcr.io", repository: "org/app", tag: nil, digest: "sha256:\(hex)"),
        Case(input: "ghcr.io/org/app:1.2@sha256:\(hex)", registry: "ghcr.io", repository: "org/app", tag: "1.2", digest: "sha256:\(hex)"),
        Case(input: "[::1]:5000/x", registry: "[::1]:5000", repository: "x", tag: "latest", digest: nil),
    ]

    @Test(arguments: cases) func parses(_ c: Case) throws {
        let reference = try Reference(parsing: c.input)
        #expect(reference.registry == c.registry)
        #expect(reference.repository == c.repository)
        #expect(reference.tag == c.tag)
        #expect(reference.digest?.description == c.digest)
    }

    @Test(arguments: ["", "upper/CASE", "a//b", "app:", "app:-bad", "app@sha256:short", "ghcr.io/-x/y", "x:\(String(repeating: "t", count: 129))"])
    func rejects(_ input: String) {
        #expect(throws: OCIError.self) { try Reference(parsing: input) }
    }

    /// Found by the fuzzer's re-parse invariant (Fuzz/regressions/reference): a 508-character name was accepted and
    /// printed with ":latest" as 515 characters, which the parser rejected. Names are bounded as Docker bounds them.
    @Test func rejectsNamesLongerThanDockers() {
        let input = "r." + String(repeating: "a", count: 450) + "/" + String(repeating: "b", count: 55)
        #expect(throws: OCIError.self) { try Reference(parsing: input) }
    }

    /// The longest valid reference (a 255-character name, a 128-character tag, a sha512 digest) prints as itself.
    @Test func longestReferenceRoundTrips() throws {
        let name = "registry.example.com:5000/" + String(repeating: "a", count: 255 - 26)
        let input = name + ":" + String(repeating: "t", count: 128) + "@sha512:" + String(repeating: "b", count: 128)
        let reference = try Reference(parsing: input)
        #expect(reference.description == input)
        #expect(try Reference(parsing: reference.description) == reference)
    }

    /// The registry goes into URLs and store paths: only a host name or address and a port get through.
    @Test(arguments: ["a b.example/x", "exa_mple.com/x", "host:port/x", "host:123456/x", "-bad.com/x", "bad-.com/x", "a..b/x", "[]/x", "[::1/x", "ex%2fample.com/x"])
    func rejectsRegistriesThatAreNotHosts(_ input: String) {
        #expect(throws: OCIError.self) { try Reference(parsing: input) }
    }

    @Test(arguments: ["Registry.Example.COM/x", "10.0.0.1:443/x", "[fe80::1]:5000/x", "my-registry:5000/x"])
    func acceptsHostsAndAddresses(_ input: String) throws {
        _ = try Reference(parsing: input)
    }

    @Test func dockerHubApiHost() throws {
        #expect(try Reference(parsing: "ubuntu").apiHost == "registry-1.docker.io")
        #expect(try Reference(parsing: "localhost:5000/x").apiHost == "localhost:5000")
    }

    @Test func layoutLocations() throws {
        #expect(try ImageLocation(parsing: "oci:/tmp/layout:v1") == .layout(path: "/tmp/layout", tag: "v1"))
        #expect(try ImageLocation(parsing: "oci:/tmp/layout") == .layout(path: "/tmp/layout", tag: nil))
        #expect(try ImageLocation(parsing: "oci:relative/dir:tag") == .layout(path: "relative/dir", tag: "tag"))
        #expect(throws: OCIError.self) { try ImageLocation(parsing: "oci:") }
        // Found by the fuzzer (Fuzz/regressions/reference): "oci::" was a layout with an empty path, printed as "oci:".
        #expect(throws: OCIError.self) { try ImageLocation(parsing: "oci::") }
        #expect(throws: OCIError.self) { try ImageLocation(parsing: "oci::tag") }
    }

    /// Found by the fuzzer: the registry host `oci` with a port printed as "oci:5000/app:latest", which is a layout.
    @Test func registryNamedOCIPrintsAsRegistry() throws {
        let location = try ImageLocation(parsing: "docker://oci:5000/app")
        #expect(location == .registry(try Reference(parsing: "docker://oci:5000/app")))
        #expect(location.description == "docker://oci:5000/app:latest")
        #expect(try ImageLocation(parsing: location.description) == location)
    }
}

@Suite(.tags(.unit)) struct DigestTests {
    @Test func validatesAlgorithmAndHex() throws {
        let digest = try Digest("sha256:" + String(repeating: "0", count: 64))
        #expect(digest.algorithm == .sha256)
        #expect(throws: OCIError.self) { try Digest("sha256:../../etc/passwd") }
        #expect(throws: OCIError.self) { try Digest("md5:" + String(repeating: "0", count: 32)) }
        #expect(throws: OCIError.self) { try Digest("sha256:" + String(repeating: "A", count: 64)) }
    }

    @Test func hashesLikeSha256sum() {
        #expect(Digest.sha256(of: Array("hello\n".utf8)).hex == "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
    }
}

@Suite(.tags(.unit)) struct DocumentTests {
    @Test func rejectsNonJSON() {
        #expect(throws: OCIError.self) { try ManifestDocument.decode(Array("<html>".utf8), contentType: MediaType.ociManifest) }
    }

    @Test func rejectsUnknownMediaType() {
        let json = #"{"schemaVersion":2,"mediaType":"application/vnd.example+json","config":{},"layers":[]}"#
        #expect(throws: OCIError.unsupportedMediaType("application/vnd.example+json")) {
            try ManifestDocument.decode(Array(json.utf8), contentType: nil)
        }
    }

    @Test func reportsMissingField() {
        let json = #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#
        #expect(throws: OCIError.self) { try ManifestDocument.decode(Array(json.utf8), contentType: nil) }
    }

    @Test func decodesIndexAndPlatform() throws {
        let hex = String(repeating: "b", count: 64)
        let json = #"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:\#(hex)","size":7,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}"#
        guard case .index(let index) = try ManifestDocument.decode(Array(json.utf8), contentType: nil) else {
            Issue.record("expected an index"); return
        }
        #expect(index.manifests[0].platform?.description == "linux/arm64/v8")
        #expect(Platform(os: "linux", architecture: "aarch64").satisfies(try Platform(parsing: "linux/arm64")))
    }
}

@Suite(.tags(.unit)) struct MediaTypeTests {
    @Test func layerCompressionOfEveryLayerType() {
        #expect(MediaType.layerCompression(MediaType.ociLayer) == .uncompressed)
        #expect(MediaType.layerCompression(MediaType.ociLayerGzip) == .gzip)
        #expect(MediaType.layerCompression(MediaType.dockerLayerGzip) == .gzip)
        #expect(MediaType.layerCompression(MediaType.ociLayerZstd) == .zstd)
        #expect(MediaType.layerCompression(MediaType.ociConfig) == nil)
    }
}
