import ContentStore
import Foundation
import Images
import OCI
import Registry
import Slipway
import Testing
import TestSupport

/// A misbehaving registry: pulls retry or fail with a clear message, and no blob with a wrong digest is ever stored.
@Suite(.tags(.integration)) struct FaultTests {
    /// Pushes the demo image (large layer `largeBytes`) through the proxy and returns the reference and the layer
    /// descriptor of the large layer.
    func prepare(_ proxy: FaultProxy, _ scratch: ScratchDirectory, session: Session, largeBytes: Int = 4 << 20) async throws
        -> (reference: String, large: Descriptor)
    {
        let layout = try makeDemoLayout(scratch, largeFileBytes: largeBytes)
        let reference = "\(proxy.host)/demo:v1"
        try await push(layout, to: reference, session: session)
        let image = try await LayoutImageSource(store: layout, imageName: "demo").resolve()
        proxy.clearLog()
        return (reference, image.manifest.layers.max { $0.size < $1.size }!)
    }

    func pull(_ reference: String, into store: ContentStore, session: Session) async throws -> ResolvedImage {
        try await Puller(session: session, store: store).pull(try ImageLocation(parsing: reference)).0
    }

    func blobFiles(_ store: ContentStore) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: "\(store.root)/blobs/sha256")) ?? []
    }

    @Test func retriesServerErrorsAndHonoursRetryAfter() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { _, proxy in
            try await withSession(try makeSession()) { session in
                let (reference, large) = try await prepare(proxy, scratch, session: session)
                proxy.inject(.internalServerError, path: "/manifests/v1")
                proxy.inject(.serviceUnavailable, path: "/blobs/\(large.digest)")
                proxy.inject(.tooManyRequests(retryAfter: 1), path: "/blobs/\(large.digest)")
                let started = ContinuousClock.now
                let image = try await pull(reference, into: try ContentStore(root: scratch.sub("store")), session: session)
                #expect(image.manifest.layers.contains(large))
                #expect(proxy.remainingFaults == 0)
                // Retry-After: 1 was honoured (the backoff alone would be ~0.1 s).
                #expect(ContinuousClock.now - started >= .milliseconds(900))
                let statuses = proxy.requests(matching: "/blobs/\(large.digest)", method: "GET").compactMap(\.status)
                #expect(statuses == [503, 429, 200])
            }
        }
    }

    @Test func resumesAfterConnectionResetAndTruncation() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { _, proxy in
            try await withSession(try makeSession()) { session in
                let (reference, large) = try await prepare(proxy, scratch, session: session)
                proxy.inject(.resetAfter(bytes: 1_000_000), path: "/blobs/\(large.digest)")
                proxy.inject(.truncateBody(bytes: 1_000_000), path: "/blobs/\(large.digest)")
                let store = try ContentStore(root: scratch.sub("store"))
                _ = try await pull(reference, into: store, session: session)
                #expect(store.hasBlob(large))
                let gets = proxy.requests(matching: "/blobs/\(large.digest)", method: "GET")
                #expect(gets.count == 3)
                // The later attempts asked only for the missing bytes.
                #expect(gets.dropFirst().allSatisfy { $0.range?.hasPrefix("bytes=") ?? false })
                #expect(gets.last?.status == 206)
                // Never started over: at most the two cut-off prefixes came twice (a reset may lose bytes in flight,
                // so the resume points are not exactly 1,000,000).
                let transferred = gets.reduce(0) { $0 + $1.responseBodyBytes }
                #expect(transferred <= Int(large.size) + 2_000_000)
            }
        }
    }

    @Test func restartsWhenTheServerIgnoresRange() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { _, proxy in
            try await withSession(try makeSession()) { session in
                let (reference, large) = try await prepare(proxy, scratch, session: session)
                proxy.inject(.resetAfter(bytes: 500_000), path: "/blobs/\(large.digest)")
                proxy.inject(.ignoreRange, path: "/blobs/\(large.digest)")
                let store = try ContentStore(root: scratch.sub("store"))
                _ = try await pull(reference, into: store, session: session)
                #expect(store.hasBlob(large))
                #expect(proxy.requests(matching: "/blobs/\(large.digest)", method: "GET").map(\.status) == [200, 200])
            }
        }
    }

    @Test func discardsFlippedBytesAndRetries() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { _, proxy in
            try await withSession(try makeSession()) { session in
                let (reference, large) = try await prepare(proxy, scratch, session: session)
                proxy.inject(.flipByte(at: 12345), path: "/blobs/\(large.digest)")
                let store = try ContentStore(root: scratch.sub("store"))
                _ = try await pull(reference, into: store, session: session)
                let bytes = try #require(FileManager.default.contents(atPath: store.blobPath(large.digest)))
                #expect(Digest.sha256(of: [UInt8](bytes)) == large.digest)
                #expect(proxy.requests(matching: "/blobs/\(large.digest)", method: "GET").count == 2)
            }
        }
    }

    @Test func neverStoresABlobThatKeepsFailingVerification() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { _, proxy in
            try await withSession(try makeSession()) { session in
                let (reference, large) = try await prepare(proxy, scratch, session: session)
                proxy.inject(.flipByte(at: 7), path: "/blobs/\(large.digest)", times: .max)
                let store = try ContentStore(root: scratch.sub("store"))
                await #expect {
                    _ = try await pull(reference, into: store, session: session)
                } throws: { error in
                    String(describing: error).contains("digest mismatch") && String(describing: error).contains(large.digest.description)
                }
                #expect(!store.hasBlob(large))
                #expect(!blobFiles(store).contains(large.digest.hex))
                #expect(try store.images().isEmpty)
            }
        }
    }

    @Test func registryToRegistryCopyPassesOnlyVerifiedBytes() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { _, proxy in
            try await RegistryProcess.withRegistry { target in
                try await withSession(try makeSession()) { session in
                    let (reference, large) = try await prepare(proxy, scratch, session: session)
                    let source = RemoteImageSource(reference: try Reference(parsing: reference), client: session.client(for: proxy.host))
                    let image = try await source.resolve()
                    // Wrong bytes every time: the copy fails and the target never gets the blob.
                    proxy.inject(.flipByte(at: 99), path: "/blobs/\(large.digest)", times: .max)
                    let broken = try session.destination(for: try ImageLocation(parsing: "\(target.host)/copy:broken"))
                    await #expect(throws: (any Error).self) { _ = try await Copier().copy(image, from: source, to: broken) }
                    #expect(try await !session.client(for: target.host).blobExists(repository: "copy", digest: large.digest))
                    // Wrong bytes once: the upload is retried with a fresh download and lands verified.
                    proxy.setRules([FaultRule(path: "/blobs/\(large.digest)", fault: .flipByte(at: 99), times: 1)])
                    let good = try session.destination(for: try ImageLocation(parsing: "\(target.host)/copy:good"))
                    _ = try await Copier().copy(image, from: source, to: good)
                    #expect(try await session.client(for: target.host).blobExists(repository: "copy", digest: large.digest))
                }
            }
        }
    }

    @Test func rangeReadsWorkWhetherOrNotTheServerHonoursRange() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { _, proxy in
            try await withSession(try makeSession()) { session in
                let (_, large) = try await prepare(proxy, scratch, session: session)
                let layout = try ContentStore(root: scratch.sub("layout-1"))
                let whole = [UInt8](try #require(FileManager.default.contents(atPath: layout.blobPath(large.digest))))
                let client = session.client(for: proxy.host)
                let honoured = try await client.fetchRange(repository: "demo", digest: large.digest, offset: 1_000_000, length: 4096)
                #expect(honoured == Array(whole[1_000_000..<1_004_096]))
                proxy.inject(.ignoreRange, path: "/blobs/\(large.digest)")
                let ignored = try await client.fetchRange(repository: "demo", digest: large.digest, offset: 1_000_000, length: 4096)
                #expect(ignored == honoured)
                #expect(proxy.requests(matching: "/blobs/\(large.digest)", method: "GET").compactMap(\.status) == [206, 200])
            }
        }
    }

    @Test func pushSurvivesALostUploadAnswer() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            try await withSession(try makeSession()) { session in
                let layout = try makeDemoLayout(scratch)
                // The registry stores the blobs, but the client never hears so.
                proxy.inject(.dropResponse, method: "PUT", path: "/blobs/uploads/", times: 2)
                _ = try await push(layout, to: "\(proxy.host)/demo:v1", session: session)
                #expect(proxy.remainingFaults == 0)
                let image = try await LayoutImageSource(store: layout, imageName: "demo").resolve()
                let pulled = try await pull("\(registry.host)/demo:v1", into: try ContentStore(root: scratch.sub("store")), session: session)
                #expect(pulled.manifest == image.manifest)
            }
        }
    }

    @Test func retriesAStalledServer() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { _, proxy in
            // 2 s, not 1: on a loaded CI machine the proxy itself can pause for a second between chunks.
            try await withSession(try makeSession(readTimeout: 2)) { session in
                let (reference, large) = try await prepare(proxy, scratch, session: session)
                proxy.inject(.stall(seconds: 4), path: "/blobs/\(large.digest)")
                let store = try ContentStore(root: scratch.sub("store"))
                _ = try await pull(reference, into: store, session: session)
                #expect(store.hasBlob(large))
            }
        }
    }

    @Test func rejectsMalformedManifests() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { _, proxy in
            try await withSession(try makeSession()) { session in
                let (reference, _) = try await prepare(proxy, scratch, session: session)
                let store = try ContentStore(root: scratch.sub("store"))
                proxy.inject(.status(200, headers: [("Content-Type", MediaType.ociManifest)], body: "<html>gateway</html>"), path: "/manifests/v1")
                await #expect { _ = try await pull(reference, into: store, session: session) } throws: {
                    String(describing: $0).contains("not a JSON object")
                }
                let unknown = #"{"schemaVersion":2,"mediaType":"application/vnd.example.thing+json","config":{},"layers":[]}"#
                proxy.inject(.status(200, headers: [("Content-Type", "application/vnd.example.thing+json")], body: unknown), path: "/manifests/v1")
                await #expect { _ = try await pull(reference, into: store, session: session) } throws: {
                    String(describing: $0).contains("unsupported media type 'application/vnd.example.thing+json'")
                }
                #expect(blobFiles(store).isEmpty)
            }
        }
    }

    @Test func cliReportsMissingTagsAndBadReferencesWithExitCodes() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let missing = try await run(slipwayBinary, ["pull", "--store", scratch.sub("store"), "\(registry.host)/nothing:here"])
            #expect(missing.status == 1)
            #expect(missing.stderr.contains("not found"), "\(missing.stderr)")
            let usage = try await run(slipwayBinary, ["pull", "--store", scratch.sub("store"), "UPPER/Case:tag"])
            #expect(usage.status == 2)
            #expect(usage.stderr.contains("invalid image reference"), "\(usage.stderr)")
        }
    }
}
