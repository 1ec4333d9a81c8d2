import ContentStore
import Foundation
import OCI
import Slipway
import Testing
import TestSupport

/// Multi-platform images: the index is resolved to this machine's image unless another platform is asked for.
@Suite(.tags(.integration)) struct PlatformTests {
    @Test func selectsTheRequestedPlatformFromAnIndex() async throws {
        let scratch = try ScratchDirectory()
        let layout = try ContentStore(root: scratch.sub("layout"))
        var entries: [Descriptor] = []
        for (architecture, variant) in [("amd64", nil), ("arm64", "v8")] as [(String, String?)] {
            var builder = ImageBuilder(store: layout)
            try builder.addLayer([(.init(name: "arch.txt", type: .regular, size: 5), Array(architecture.prefix(5).utf8))], comment: architecture)
            var descriptor = try builder.commit(name: architecture, config: .init(), platform: Platform(os: "linux", architecture: architecture, variant: variant))
            descriptor.platform = Platform(os: "linux", architecture: architecture, variant: variant)
            entries.append(descriptor)
        }
        let index = Index(manifests: entries)
        let indexDescriptor = try layout.writeBlob(Array(try JSONEncoder.canonical.encode(index)), mediaType: MediaType.ociIndex)
        try layout.setImage(named: "multi", to: indexDescriptor)

        try await RegistryProcess.withRegistry { registry in
            let pushed = try await run("skopeo", ["copy", "-q", "--all", "--dest-tls-verify=false", "oci:\(layout.root):multi", "docker://\(registry.host)/multi:v1"])
            #expect(pushed.status == 0, "\(pushed.stderr)")
            try await withSession(try makeSession()) { session in
                let source = try session.source(for: try ImageLocation(parsing: "\(registry.host)/multi:v1"))
                let arm = try await source.resolve(platform: try Platform(parsing: "linux/arm64"))
                #expect(arm.manifestDescriptor.digest == entries[1].digest)
                #expect(arm.index?.descriptor.digest == indexDescriptor.digest)
                #expect(arm.config.architecture == "arm64")
                let amd = try await source.resolve(platform: try Platform(parsing: "linux/amd64"))
                #expect(amd.manifestDescriptor.digest == entries[0].digest)
                await #expect(throws: OCIError.noMatchingPlatform(wanted: "linux/s390x", available: ["linux/amd64", "linux/arm64"])) {
                    _ = try await source.resolve(platform: try Platform(parsing: "linux/s390x"))
                }
            }
            let cli = try await run(slipwayBinary, ["inspect", "--json", "--platform", "linux/arm64", "\(registry.host)/multi:v1"])
            #expect(cli.status == 0, "\(cli.stderr)")
            #expect(cli.stdout.contains(entries[1].digest.description))
        }
    }

    @Test func zstdLayersUnpackLikeGzip() async throws {
        let scratch = try ScratchDirectory()
        let tar = scratch.sub("layer.tar")
        let tree = scratch.sub("tree")
        try FileManager.default.createDirectory(atPath: "\(tree)/etc", withIntermediateDirectories: true)
        try "zstd works\n".write(toFile: "\(tree)/etc/hello", atomically: true, encoding: .utf8)
        #expect(try await run("tar", ["-C", tree, "-cf", tar, "."]).status == 0)
        try await RegistryProcess.withRegistry { registry in
            for compression in ["zstd", "gzip", "none"] {
                let layout = "oci:\(scratch.sub("layout-\(compression)")):img"
                #expect(try await run(slipwayBinary, ["assemble", layout, "--layer", tar, "--compression", compression]).status == 0)
                #expect(try await run(slipwayBinary, ["copy", "-q", layout, "\(registry.host)/\(compression):v1"]).status == 0)
                let rootfs = scratch.sub("rootfs-\(compression)")
                let unpacked = try await run(slipwayBinary, ["unpack", "-q", "--store", scratch.sub("store"), "\(registry.host)/\(compression):v1", rootfs])
                #expect(unpacked.status == 0, "\(unpacked.stderr)")
                #expect(try String(contentsOfFile: "\(rootfs)/etc/hello", encoding: .utf8) == "zstd works\n")
            }
        }
    }
}
