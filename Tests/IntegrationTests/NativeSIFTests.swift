import Blocking
import CLinux
import Foundation
import SIF
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// `slipway convert --to sif` with the native squashfs writer, on an image built to be awkward (see
/// `makeAwkwardTree`) plus a second layer with a whiteout, an opaque directory, a replaced file and new hard
/// links: the kernel, unsquashfs and squashfuse must each see exactly the tree `umoci unpack` makes of the same
/// image, and siftool must read the SIF.
@Suite(.tags(.integration, .slow), .enabled(if: sifToolsAvailable && geteuid() == 0, "needs siftool, squashfs-tools and root"), .serialized)
struct NativeSIFTests {
    /// Pushes the two-layer awkward image to `registry` and returns its reference.
    func pushAwkwardImage(_ registry: RegistryProcess, _ scratch: ScratchDirectory, tag: String = "v1", version: String = "1") async throws -> String {
        let base = scratch.sub("base")
        if !FileManager.default.fileExists(atPath: base) {
            try await runBlocking { try makeAwkwardTree(base) }
            // Go's archive/tar reads a PAX record with an empty value as no record, so umoci drops an empty
            // attribute that the layer carries (and Slipway keeps); the unit tests cover empty values.
            removexattr("\(base)/a/b/large", "user.empty")
        }
        let top = scratch.sub("top-\(tag)")
        for directory in ["a/b/c", "links2", "a"] {
            try FileManager.default.createDirectory(atPath: "\(top)/\(directory)", withIntermediateDirectories: true)
        }
        try write("", to: "\(top)/a/.wh.duplicate-2")
        try write("", to: "\(top)/a/b/c/.wh..wh..opq")
        try write("the only file of c now\n", to: "\(top)/a/b/c/new")
        try write(String(repeating: "replaced ", count: 20_000), to: "\(top)/a/one-block")
        try write("two names\n", to: "\(top)/links2/x")
        link("\(top)/links2/x", "\(top)/links2/y")
        try write("version \(version)\n", to: "\(top)/version.txt")
        for (name, root) in [("base", base), ("top-\(tag)", top)] where !FileManager.default.fileExists(atPath: scratch.sub("\(name).tar")) {
            try await runChecked("tar", ["--xattrs", "--xattrs-include=*", "--numeric-owner", "-cf", scratch.sub("\(name).tar"), "-C", root, "."])
        }
        let layout = scratch.sub("layout-\(tag)")
        try await runChecked(slipwayBinary, ["assemble", "-q", "oci:\(layout):awkward", "--layer", scratch.sub("base.tar"), "--layer", scratch.sub("top-\(tag).tar")])
        let reference = "\(registry.host)/awkward:\(tag)"
        try await runChecked(slipwayBinary, ["copy", "-q", "oci:\(layout):awkward", reference])
        return reference
    }

    @Test func theKernelUnsquashfsAndSquashfuseSeeWhatUmociUnpacks() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let reference = try await pushAwkwardImage(registry, scratch)
            try await runChecked("skopeo", ["copy", "-q", "--src-tls-verify=false", "docker://\(reference)", "oci:\(scratch.sub("umoci-layout")):awkward"])
            try await runChecked("umoci", ["unpack", "--image", "\(scratch.sub("umoci-layout")):awkward", scratch.sub("bundle")])
            let expected = try await describeTreeOffThePool(scratch.sub("bundle/rootfs"), times: true)
            #expect(expected["a/b/c/new"] != nil && expected["a/b/c/duplicate-1"] == nil && expected["a/duplicate-2"] == nil)

            let sif = scratch.sub("awkward.sif")
            let converted = try await runChecked(slipwayBinary, ["convert", "--json", "--store", scratch.sub("store"), reference, sif, "--to", "sif"])
            let report = try #require(try JSONSerialization.jsonObject(with: Data(converted.stdout.utf8)) as? [String: Any])
            #expect(report["squashfsTool"] as? String == "native")
            for command in [["header", sif], ["list", sif]] { try await runChecked("siftool", command) }
            let partition = try SIFFile(path: sif).requirePrimaryPartition()
            try await runChecked("siftool", ["info", String(partition.id), sif])
            let offset = String(partition.offset)

            func imageTree(_ root: String) async throws -> [String: TreeEntry] {
                try await describeTreeOffThePool(root, times: true).filter { !$0.key.hasPrefix(".singularity.d") }
            }
            try await runChecked("unsquashfs", ["-no-progress", "-o", offset, "-d", scratch.sub("unsquashfs"), sif])
            expectSameTree(try await imageTree(scratch.sub("unsquashfs")), expected, reader: "unsquashfs -d")

            let kernel = scratch.sub("kernel")
            try FileManager.default.createDirectory(atPath: kernel, withIntermediateDirectories: true)
            try await runChecked("mount", ["-t", "squashfs", "-o", "loop,ro,offset=\(offset)", sif, kernel])
            expectSameTree(try await imageTree(kernel), expected, reader: "the kernel")
            #expect(try String(contentsOfFile: "\(kernel)/.singularity.d/runscript", encoding: .utf8).hasPrefix("#!/bin/sh"))
            try await runChecked("umount", [kernel])

            let fuse = scratch.sub("squashfuse")
            try FileManager.default.createDirectory(atPath: fuse, withIntermediateDirectories: true)
            // system(3), not Process: squashfuse daemonizes and would keep Process's pipes open for ever.
            #expect(system("squashfuse -o offset=\(offset) '\(sif)' '\(fuse)' </dev/null >/dev/null 2>&1") == 0)
            defer { detachMount(fuse) }
            // squashfuse 0.1.105 swaps the trusted. and security. prefixes and fails on empty values, on mksquashfs's
            // images too: its extended attributes are not compared.
            func withoutXattrs(_ tree: [String: TreeEntry]) -> [String: TreeEntry] { tree.mapValues { var entry = $0; entry.xattrs = [:]; return entry } }
            expectSameTree(withoutXattrs(try await imageTree(fuse)), withoutXattrs(expected), reader: "squashfuse")
        }
    }

    @Test func aPatchReleaseCompressesOnlyWhatChanged() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let v1 = try await pushAwkwardImage(registry, scratch, tag: "v1", version: "1")
            let v2 = try await pushAwkwardImage(registry, scratch, tag: "v2", version: "2")
            let store = scratch.sub("store")
            func convert(_ reference: String, _ output: String, tool: String = "native") async throws -> [String: Any] {
                let converted = try await runChecked(
                    slipwayBinary, ["convert", "--json", "--store", store, reference, scratch.sub(output), "--to", "sif", "--squashfs-tool", tool])
                return try #require(try JSONSerialization.jsonObject(with: Data(converted.stdout.utf8)) as? [String: Any])
            }
            let first = try #require(try await convert(v1, "v1.sif")["squashfs"] as? [String: Any])
            #expect(first["blocksReused"] as? Int == 0)
            let second = try #require(try await convert(v2, "v2.sif")["squashfs"] as? [String: Any])
            #expect(second["blocksCompressed"] as? Int == 0, "\(second)")
            #expect(second["blocksReused"] as? Int == first["blocksCompressed"] as? Int)
            #expect((second["fragmentsCompressed"] as? Int ?? 99) <= 2, "\(second)")
            // Only the new top layer's files (and the generated /.singularity.d ones) are read to be hashed.
            #expect((second["filesHashed"] as? Int ?? 99) <= 12, "\(second)")
            #expect((first["filesHashed"] as? Int ?? 0) > 10_000, "\(first)")
            let partition = try SIFFile(path: scratch.sub("v2.sif")).requirePrimaryPartition()
            let version = try await runChecked("unsquashfs", ["-cat", "-o", String(partition.offset), scratch.sub("v2.sif"), "version.txt"])
            #expect(version.stdout == "version 2\n")

            // mksquashfs, for comparison, builds the same tree.
            let reference = try await convert(v2, "mksquashfs.sif", tool: "mksquashfs")
            #expect(reference["squashfsTool"] as? String == "mksquashfs")
        }
    }

    @Test func aLayerThatFailsMidStreamLeavesNoSIF() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            _ = try await pushAwkwardImage(registry, scratch)
            let reference = "\(proxy.host)/awkward:v1"
            let large = try #require(try await layerDescriptors(reference).max { $0.size < $1.size })
            // Every answer for the large layer has one byte flipped: its digest never matches.
            proxy.inject(.flipByte(at: 100_000), path: "/blobs/\(large.digest)", times: 1000)
            let store = scratch.sub("store")
            let failed = try await run(slipwayBinary, ["convert", "-q", "--store", store, reference, scratch.sub("broken.sif"), "--to", "sif"])
            #expect(failed.status == 1)
            #expect(failed.stderr.contains(large.digest), "\(failed.stderr)")
            #expect(!FileManager.default.fileExists(atPath: scratch.sub("broken.sif")))
            let cached = (try? FileManager.default.contentsOfDirectory(atPath: "\(store)/sif/sha256")) ?? []
            #expect(cached.isEmpty, "\(cached)")
        }
    }

    /// What Warewulf's SIF import (its main branch) does: find the primary system partition, require squashfs by
    /// its partition metadata and its magic, extract it with `unsquashfs -o OFFSET`, and require /bin/sh.
    @Test func aSIFImportsTheWayWarewulfImportsIt() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let layout = try await makeToolsLayout(scratch)
            let reference = "\(registry.host)/tools:1"
            try await runChecked(slipwayBinary, ["copy", "-q", "oci:\(layout):tools", reference])
            let sif = scratch.sub("tools.sif")
            try await runChecked(slipwayBinary, ["convert", "-q", "--store", scratch.sub("store"), reference, sif, "--to", "sif"])
            let partition = try #require(try SIFFile(path: sif).primaryPartition)
            #expect(partition.partition?.filesystem == .squashfs && partition.partition?.type == .primarySystem)
            #expect(partition.partition?.arch == .host)
            let handle = try #require(FileHandle(forReadingAtPath: sif))
            try handle.seek(toOffset: UInt64(partition.offset))
            #expect(try handle.read(upToCount: 4) == Data("hsqs".utf8))
            try handle.close()
            let rootfs = scratch.sub("chroots/tools/rootfs")
            try FileManager.default.createDirectory(atPath: rootfs, withIntermediateDirectories: true)
            try await runChecked("unsquashfs", ["-f", "-n", "-d", rootfs, "-o", String(partition.offset), sif])
            var info = stat()
            #expect(stat("\(rootfs)/bin/sh", &info) == 0 && info.st_mode & S_IFMT == S_IFREG)
        }
    }
}
