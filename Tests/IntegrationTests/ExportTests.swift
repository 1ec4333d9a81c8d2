import Foundation
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// `slipway export`: the docker-archive file is what skopeo and podman read (and what Warewulf imports), layer
/// for layer the image's diffIDs; the rootfs is the unpacked tree.
@Suite(.tags(.integration), .serialized)
struct ExportTests {
    @Test func skopeoAndPodmanReadTheDockerArchive() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let layout = try await makeToolsLayout(scratch)
            let reference = "\(registry.host)/tools:1"
            try await runChecked(slipwayBinary, ["copy", "-q", "oci:\(layout):tools", reference])
            let archive = scratch.sub("tools.tar")
            try await runChecked(slipwayBinary, ["export", "-q", "--store", scratch.sub("store"), reference, "--to", "docker-archive", archive])

            let inspected = try await runChecked("skopeo", ["inspect", "docker-archive:\(archive)"])
            let fromArchive = try #require(try JSONSerialization.jsonObject(with: Data(inspected.stdout.utf8)) as? [String: Any])
            let config = try await runChecked("skopeo", ["inspect", "--config", "--tls-verify=false", "docker://\(reference)"])
            let diffIDs = ((try JSONSerialization.jsonObject(with: Data(config.stdout.utf8)) as? [String: Any])?["rootfs"] as? [String: Any])?["diff_ids"] as? [String]
            // The archive's layers are the uncompressed tars: their digests are the image's diffIDs.
            #expect(fromArchive["Layers"] as? [String] == diffIDs)
            let manifest = try await runChecked("tar", ["-xOf", archive, "manifest.json"])
            #expect(manifest.stdout.contains("\"RepoTags\":[\"\(registry.host)/tools:1\"]"), "\(manifest.stdout)")

            if FileManager.default.isExecutableFile(atPath: "/usr/bin/podman") {
                let root = scratch.sub("podman")
                let podman = ["--root", "\(root)/storage", "--runroot", "\(root)/run", "--storage-driver", "vfs"]
                let loaded = try await runChecked("podman", podman + ["load", "-i", archive])
                #expect(loaded.stdout.contains("tools:1"), "\(loaded.stdout)")
                let listed = try await runChecked("podman", podman + ["image", "inspect", "\(registry.host)/tools:1", "--format", "{{.RootFS.Layers}}"])
                for diffID in diffIDs ?? [] { #expect(listed.stdout.contains(diffID)) }
            }
            // A tree too: the same as unpack's.
            try await runChecked(slipwayBinary, ["export", "-q", "--store", scratch.sub("store"), reference, "--to", "rootfs", scratch.sub("rootfs")])
            try await runChecked(slipwayBinary, ["unpack", "-q", "--store", scratch.sub("store"), reference, scratch.sub("unpacked")])
            expectSameTree(
                try await describeTreeOffThePool(scratch.sub("rootfs"), times: true), try await describeTreeOffThePool(scratch.sub("unpacked"), times: true),
                reader: "export --to rootfs")
        }
    }

    @Test func anArchiveThatCannotBeWrittenLeavesNothing() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let missing = try await run(slipwayBinary, ["export", "-q", "--store", scratch.sub("store"), "\(registry.host)/none:1", "--to", "docker-archive", scratch.sub("none.tar")])
            #expect(missing.status != 0)
            #expect(missing.stderr.contains("none"), "\(missing.stderr)")
            let badTarget = try await run(slipwayBinary, ["export", "-q", "--store", scratch.sub("store"), "\(registry.host)/none:1", "--to", "zip", scratch.sub("x")])
            #expect(badTarget.status != 0 && badTarget.stderr.contains("--to takes docker-archive or rootfs"))
            #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).filter { $0.hasSuffix(".tar") || $0.contains(".tmp-") }.isEmpty)
        }
    }
}
