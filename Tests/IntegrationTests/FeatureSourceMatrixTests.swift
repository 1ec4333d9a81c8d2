import Foundation
import SIF
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Every feature takes its image from every source: a registry and an OCI layout, each straight into an empty
/// store (no separate pull first). The image is the tools image (busybox, a whiteout and an opaque directory in a
/// second layer), whose `/version.txt` every feature must show.
@Suite(
    .tags(.integration, .slow),
    .enabled(if: runTestsEnabled && fuseAvailable && sifConversionAvailable, "needs root, runc, FUSE and squashfs-tools"))
struct FeatureSourceMatrixTests {
    static let expected = "tools 1\n"

    enum Source: String, CaseIterable {
        case registry
        case layout
    }

    @Test(arguments: Source.allCases)
    func everyFeatureReadsTheImageFromTheSource(_ source: Source) async throws {
        let scratch = try ScratchDirectory()
        let layout = try await makeToolsLayout(scratch)
        try await RegistryProcess.withRegistry { registry in
            let reference: String
            switch source {
            case .registry:
                reference = "\(registry.host)/tools:1"
                #expect(try await run(slipwayBinary, ["copy", "-q", "oci:\(layout):tools", reference]).status == 0)
            case .layout:
                reference = "oci:\(layout):tools"
            }
            // Each feature starts from an empty store of its own (umount uses the mount's).
            @discardableResult
            func slipway(_ feature: String, _ arguments: [String]) async throws -> ProcessResult {
                let store = scratch.sub("store-\(feature == "umount" ? "mount" : feature)")
                let result = try await run(slipwayBinary, [feature, "-q", "--store", store] + arguments)
                #expect(result.status == 0, "\(feature) from the \(source): \(result.stderr)")
                return result
            }

            try await slipway("pull", [reference])
            try await slipway("unpack", [reference, scratch.sub("rootfs")])
            #expect(try String(contentsOfFile: scratch.sub("rootfs/version.txt"), encoding: .utf8) == Self.expected, "unpack")

            let converted = "oci:\(scratch.sub("converted")):esgz"
            try await slipway("convert", [reference, converted])
            try await slipway("unpack", [converted, scratch.sub("rootfs-converted")])
            #expect(try String(contentsOfFile: scratch.sub("rootfs-converted/version.txt"), encoding: .utf8) == Self.expected, "convert")

            let sif = scratch.sub("tools.sif")
            try await slipway("convert", [reference, sif, "--to", "sif"])
            let offset = try #require(try SIFFile(path: sif).primaryPartition).offset
            let inSIF = try await run("unsquashfs", ["-o", String(offset), "-cat", sif, "version.txt"])
            #expect(inSIF.stdout == Self.expected, "convert --to sif: \(inSIF.stderr)")

            let mountpoint = scratch.sub("mnt")
            try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
            defer { detachMount(mountpoint) }
            try await slipway("mount", [reference, mountpoint])
            #expect(try String(contentsOfFile: "\(mountpoint)/version.txt", encoding: .utf8) == Self.expected, "mount")
            try await slipway("umount", [mountpoint])

            for mode in ["unpacked", "lazy"] {
                let ran = try await slipway("run", ["--mode", mode, reference, "--", "/bin/cat", "/version.txt"])
                #expect(ran.stdout == Self.expected, "run --mode \(mode)")
            }
        }
    }
}
