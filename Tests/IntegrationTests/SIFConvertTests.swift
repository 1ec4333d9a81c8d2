import Blocking
import ContentStore
import Foundation
import SIF
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

let sifToolsAvailable = ["/usr/bin/siftool", "/usr/bin/mksquashfs", "/usr/bin/unsquashfs"].allSatisfy(FileManager.default.isExecutableFile)

/// `slipway convert --to sif` against the real tools: siftool reads the file, unsquashfs and the kernel (and
/// squashfuse) see the same tree as `slipway unpack`, and the store caches the result.
@Suite(.tags(.integration, .slow), .enabled(if: sifToolsAvailable, "needs siftool and squashfs-tools"), .serialized)
struct SIFConvertTests {
    /// The tree of the image as `slipway unpack` writes it, and the SIF of the same image.
    func convert(_ registry: RegistryProcess, _ scratch: ScratchDirectory) async throws -> (rootfs: String, sif: String, store: String) {
        let layout = try makeDemoLayout(scratch, largeFileBytes: 2 << 20)
        let reference = "\(registry.host)/demo:v1"
        #expect(try await run(slipwayBinary, ["copy", "-q", "oci:\(layout.root):demo", reference]).status == 0)
        let rootfs = scratch.sub("rootfs")
        #expect(try await run(slipwayBinary, ["unpack", "-q", "--store", scratch.sub("unpack-store"), reference, rootfs]).status == 0)
        let sif = scratch.sub("demo.sif")
        let converted = try await run(slipwayBinary, ["convert", "-q", "--store", scratch.sub("store"), reference, sif, "--to", "sif"])
        try #require(converted.status == 0, "convert: \(converted.stderr)")
        return (rootfs, sif, scratch.sub("store"))
    }

    @Test func siftoolAndUnsquashfsReadWhatSlipwayWrites() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let (rootfs, sif, _) = try await convert(registry, scratch)
            for command in [["header", sif], ["list", sif]] {
                let result = try await run("siftool", command)
                #expect(result.status == 0, "siftool \(command[0]): \(result.stderr)")
            }
            let listing = try await run("siftool", ["list", sif]).stdout
            #expect(listing.contains("Squashfs") && listing.contains("Def.FILE") && listing.contains("JSON.Generic"), "\(listing)")
            let file = try SIFFile(path: sif)
            let partition = try file.requirePrimaryPartition()
            #expect(partition.offset % 4096 == 0)
            #expect(partition.partition?.arch.goArch == "amd64")
            let config = try #require(file.objects(ofType: .genericJSON).first)
            #expect(config.name == "oci-config.json")
            #expect(try await run("siftool", ["info", String(partition.id), sif]).status == 0)

            // unsquashfs lists the unpacked tree, plus Apptainer's /.singularity.d.
            let listed = try await run("unsquashfs", ["-lc", "-o", String(partition.offset), sif])
            try #require(listed.status == 0, "unsquashfs: \(listed.stderr)")
            var inSquashfs = Set(listed.stdout.split(separator: "\n").compactMap { line -> String? in
                guard line.hasPrefix("squashfs-root/") else { return nil }
                return String(line.dropFirst("squashfs-root/".count))
            })
            #expect(inSquashfs.contains(".singularity.d/runscript"))
            inSquashfs = inSquashfs.filter { !$0.hasPrefix(".singularity.d") }
            let unpacked = try describeTree(rootfs)
            let files = Set(unpacked.filter { $0.value.type != "dir" }.keys)
            // `-lc` also lists empty directories.
            inSquashfs.subtract(unpacked.filter { $0.value.type == "dir" }.keys)
            #expect(inSquashfs == files, "only in squashfs: \(inSquashfs.subtracting(files)); only unpacked: \(files.subtracting(inSquashfs))")
        }
    }

    @Test(.enabled(if: geteuid() == 0, "loop mounts need root"))
    func theKernelAndSquashfuseMountThePartitionWithTheUnpackedTree() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let (rootfs, sif, _) = try await convert(registry, scratch)
            let offset = try SIFFile(path: sif).requirePrimaryPartition().offset
            var expected = try describeTree(rootfs)
            expected = expected.filter { !$0.key.hasPrefix(".singularity.d") }
            for (name, command) in [
                ("kernel", ["/bin/mount", "-t", "squashfs", "-o", "loop,ro,offset=\(offset)", sif]),
                ("squashfuse", ["/usr/bin/squashfuse", "-o", "offset=\(offset)", sif]),
            ] where FileManager.default.isExecutableFile(atPath: command[0]) {
                let mountpoint = scratch.sub("mnt-\(name)")
                try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
                // system(3), not Process: squashfuse daemonizes and would keep Process's pipes open for ever.
                let status = system((command + [mountpoint]).map { "'\($0)'" }.joined(separator: " ") + " </dev/null >/dev/null 2>&1")
                try #require(status == 0, "\(name) mount failed with status \(status)")
                defer { detachMount(mountpoint) }
                let tree = try describeTree(mountpoint).filter { !$0.key.hasPrefix(".singularity.d") }
                #expect(Set(tree.keys) == Set(expected.keys), "\(name)")
                for (path, entry) in expected where tree[path].map({ $0.contentHash != entry.contentHash || $0.mode != entry.mode || $0.type != entry.type }) ?? true {
                    Issue.record("\(name) \(path): unpacked \(entry) vs mounted \(tree[path].map(\.description) ?? "missing")")
                }
                let runscript = try String(contentsOfFile: "\(mountpoint)/.singularity.d/runscript", encoding: .utf8)
                #expect(runscript.hasPrefix("#!/bin/sh"))
            }
        }
    }

    @Test func aSecondConversionComesFromTheStoreAndGcKeepsOnlyLiveSIFs() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let (_, sif, store) = try await convert(registry, scratch)
            let again = try await run(slipwayBinary, ["convert", "--json", "--store", store, "\(registry.host)/demo:v1", scratch.sub("again.sif"), "--to", "sif"])
            try #require(again.status == 0, "\(again.stderr)")
            let report = try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as? [String: Any]
            #expect(report?["cached"] as? Bool == true)
            #expect(FileManager.default.contents(atPath: sif) == FileManager.default.contents(atPath: scratch.sub("again.sif")))
            // The OCI-SIF of the same image, and what the store keeps per layer for both.
            try await runChecked(slipwayBinary, ["convert", "-q", "--store", store, "\(registry.host)/demo:v1", scratch.sub("demo.oci.sif"), "--to", "oci-sif"])
            let kept = ["sif", "oci-sif", "squashfs-layers", "layer-entries"].map { "\(store)/\($0)/sha256" }
            func files(_ directory: String) -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] }
            #expect(files(kept[0]).filter { $0.hasSuffix(".blocks") }.count == 1)
            #expect(files(kept[1]).count == 1 && files(kept[2]).count == 3 && files(kept[3]).count == 3, "\(kept.map(files))")
            // A conversion killed midway leaves only a temporary file, which gc removes with the unreferenced SIFs,
            // their block indexes, the layers' squashfs images and entry listings.
            FileManager.default.createFile(atPath: "\(kept[0])/.tmp-999999-1.sif", contents: Data(count: 4096))
            #expect(try await run(slipwayBinary, ["rmi", "-q", "--store", store, "\(registry.host)/demo:v1"]).status == 0)
            let collected = try await run(slipwayBinary, ["gc", "--json", "--store", store])
            #expect(collected.status == 0, "\(collected.stderr)")
            for directory in kept { #expect(files(directory).isEmpty, "\(directory): \(files(directory))") }
        }
    }

    @Test func aKilledConversionLeavesNoSIFInTheCache() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let layout = try makeDemoLayout(scratch, largeFileBytes: 48 << 20)
            let reference = "\(registry.host)/demo:big"
            #expect(try await run(slipwayBinary, ["copy", "-q", "oci:\(layout.root):demo", reference]).status == 0)
            let store = scratch.sub("store")
            #expect(try await run(slipwayBinary, ["pull", "-q", "--store", store, reference]).status == 0)
            let process = try ChildProcess(slipwayBinary, ["convert", "-q", "--store", store, reference, scratch.sub("big.sif"), "--to", "sif"])
            // Kill it once it writes the partition: its temporary SIF is in the cache. The native writer takes about a
            // second here, so the watch runs on a thread of its own (a loaded cooperative pool could miss it).
            let cache = "\(store)/sif/sha256"
            let caught = await runBlocking { () -> Bool in
                let deadline = ContinuousClock.now + .seconds(60)
                while ContinuousClock.now < deadline, process.endedStatus == nil {
                    let temporaries = (try? FileManager.default.contentsOfDirectory(atPath: cache)) ?? []
                    if temporaries.contains(where: { $0.hasPrefix(".tmp-") }) {
                        kill(process.pid, SIGKILL)
                        return true
                    }
                    usleep(1000)
                }
                return false
            }
            #expect(caught, "the conversion ended before its temporary SIF appeared")
            await process.exitStatus()
            let left = (try? FileManager.default.contentsOfDirectory(atPath: "\(store)/sif/sha256")) ?? []
            #expect(!left.contains { $0.hasSuffix(".sif") && !$0.hasPrefix(".tmp-") }, "a SIF appeared in the cache: \(left)")
            #expect(!FileManager.default.fileExists(atPath: scratch.sub("big.sif")))
            // The next conversion works and replaces nothing half-written.
            let again = try await run(slipwayBinary, ["convert", "-q", "--store", store, reference, scratch.sub("big.sif"), "--to", "sif"])
            #expect(again.status == 0, "\(again.stderr)")
            #expect(try SIFFile(path: scratch.sub("big.sif")).primaryPartition != nil)
        }
    }
}
