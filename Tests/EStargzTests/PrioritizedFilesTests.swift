import Archive
import Foundation
import OCI
import Testing
import TestSupport

@testable import EStargz

/// Compiles a Go program against Debian's reference eStargz package; returns the binary's path.
func buildGoProgram(_ source: String, name: String) async throws -> String {
    let mainPath = try temporaryFile(Array(source.utf8), name: "main.go")
    let dir = URL(fileURLWithPath: mainPath).deletingLastPathComponent().path
    let env = ["GO111MODULE": "off", "GOPATH": goPath, "GOCACHE": NSTemporaryDirectory() + "/slipway-test-gocache", "GOFLAGS": ""]
    let build = try await run("/usr/bin/go", ["build", "-o", dir + "/" + name, "main.go"], environment: env, directory: dir)
    try #require(build.status == 0, "go build failed: \(build.output)")
    return dir + "/" + name
}

/// `--prioritize`: the listed files (with their parents and hard link targets) move to the front of the layer,
/// followed by `.prefetch.landmark`.
@Suite(.tags(.unit)) struct PrioritizedFilesTests {
    let chunk = 64 << 10

    @Test func missingPathsFailUnlessAllowed() throws {
        let (tar, _) = try makeInputTar(chunk: chunk)
        #expect {
            _ = try convert(tar, chunk: chunk, prioritized: ["etc/hosts", "no/such/file"])
        } throws: { error in
            "\(error)".contains("no/such/file")
        }
        let (_, result) = try convert(tar, chunk: chunk, prioritized: ["etc/hosts", "no/such/file"], allowMissing: true)
        #expect(result.missingPrioritizedFiles == ["no/such/file"])
        #expect(result.toc.entries.map(\.name).prefix(3) == ["etc/", "etc/hosts", prefetchLandmarkName])
    }

    @Test func layerWithoutAnyListedFileHasNoPrefetchRegion() throws {
        let (tar, _) = try makeInputTar(chunk: chunk)
        let (plain, _) = try convert(tar, chunk: chunk)
        let (blob, result) = try convert(tar, chunk: chunk, prioritized: ["elsewhere/a"], allowMissing: true)
        #expect(result.toc.entries.first?.name == noPrefetchLandmarkName)
        #expect(result.prefetchSize == 0)
        // Same layout as without a list at all: the layer is not reordered.
        #expect(blob == plain)
    }

    @Test func pathsAreNormalisedLikeTOCNames() throws {
        // "/usr/small" and "./etc/hosts" name the tar's "usr/small" and "etc/hosts".
        let (tar, _) = try makeInputTar(chunk: chunk)
        let (_, result) = try convert(tar, chunk: chunk, prioritized: ["/usr/small", "./etc/hosts"])
        #expect(result.toc.entries.map(\.name).prefix(5) == ["usr/", "usr/small", "etc/", "etc/hosts", prefetchLandmarkName])
    }
}

/// The order the reference builder (Debian's Go eStargz package) produces, and a layer its verifier accepts.
@Suite(.tags(.integration)) struct PrioritizedFilesReferenceTests {
    let chunk = 64 << 10

    @Test(.enabled(if: referenceAvailable, "needs golang-go and golang-github-containerd-stargz-snapshotter-dev"))
    func orderMatchesTheReferenceAndVerifies() async throws {
        let (tar, _) = try makeInputTar(chunk: chunk)
        let prioritized = ["usr/hard", "etc/hosts"]
        let (blob, ours) = try convert(tar, chunk: chunk, prioritized: prioritized)

        let builder = try await buildGoProgram(goBuilder, name: "build")
        let tarPath = try temporaryFile(tar, name: "layer.tar")
        let referencePath = tarPath + ".esgz"
        let out = try await run(builder, [tarPath, referencePath, String(chunk), prioritized.joined(separator: ",")])
        try #require(out.status == 0, "estargz.Build: \(out.output)")
        let reference = try EStargzReader(blob: Array(try Data(contentsOf: URL(fileURLWithPath: referencePath))))

        func order(_ entries: [TOCEntry]) async -> [String] { entries.map { "\($0.type) \($0.name) \($0.chunkOffset)" } }
        await #expect(order(ours.toc.entries) == order(reference.toc.entries))
        await #expect(order(ours.toc.entries).prefix(8) == [
            "dir usr/ 0", "reg usr/big.bin 0", "chunk usr/big.bin 65536", "chunk usr/big.bin 131072", "chunk usr/big.bin 196608",
            "hardlink usr/hard 0", "dir etc/ 0", "reg etc/hosts 0",
        ])
        #expect(ours.toc.entries[8].name == prefetchLandmarkName)
        #expect(!ours.toc.entries.contains { $0.name == noPrefetchLandmarkName })
        // The prefetch region is everything before the landmark's payload: the prioritized files' chunks.
        #expect(ours.prefetchSize == ours.toc.entries[8].offset)
        #expect(ours.prefetchSize > Int64(3 * chunk) / 2)

        let verifier = try await buildGoProgram(goVerifier, name: "verify")
        let blobPath = try temporaryFile(blob, name: "ours.esgz")
        let verified = try await run(verifier, [blobPath, ours.tocDigest.description])
        #expect(verified.status == 0, "reference verifier: \(verified.output)")
    }
}
