import Blocking
import CLinux
import Foundation
import ImageTree
import Testing
import TestSupport

@testable import Squashfs

#if canImport(Glibc)
import Glibc
#endif

func squash(_ source: String, into image: String, offset: Int64 = 0, options: SquashfsWriter.Options = SquashfsWriter.Options(), reuse: ReusableBlocks? = nil) throws
    -> SquashfsWriter.Report
{
    let tree = ImageTree(layers: [try LayerEntries.fromDirectory(source)])
    return try squash(tree, into: image, offset: offset, options: options, reuse: reuse)
}

func squash(_ tree: ImageTree, into image: String, offset: Int64 = 0, options: SquashfsWriter.Options = SquashfsWriter.Options(), reuse: ReusableBlocks? = nil) throws
    -> SquashfsWriter.Report
{
    let descriptor = open(image, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard descriptor >= 0 else { throw TestSupportError("cannot create \(image)") }
    defer { close(descriptor) }
    return try SquashfsWriter.write(tree, to: descriptor, path: image, at: offset, options: options, reuse: reuse)
}

@Suite("Squashfs writer against the kernel, unsquashfs and squashfuse", .tags(.integration), .serialized)
struct SquashfsWriterTests {
    @Test(.enabled(if: geteuid() == 0, "loop mounts, devices and trusted. attributes need root"))
    func theKernelUnsquashfsAndSquashfuseReadTheTreeAsWritten() async throws {
        let scratch = try ScratchDirectory()
        let source = scratch.sub("source")
        let image = scratch.sub("image.sif")
        let offset: Int64 = 3 * 4096
        let (expected, report) = try await runBlocking {
            try makeAwkwardTree(source)
            return (try describeTree(source, times: true), try squash(source, into: image, offset: offset))
        }
        #expect(report.bytes % 4096 == 0)
        #expect(Int64(report.bytes) + offset == Int64(try FileManager.default.attributesOfItem(atPath: image)[.size] as! Int))
        #expect(report.data.duplicateFiles >= 1)

        let extracted = scratch.sub("unsquashfs")
        try await runChecked("unsquashfs", ["-no-progress", "-o", String(offset), "-d", extracted, image])
        expectSameTree(try await describeTreeOffThePool(extracted, times: true), expected, reader: "unsquashfs -d")
        let listing = try await runChecked("unsquashfs", ["-lls", "-o", String(offset), image])
        #expect(listing.stdout.contains("squashfs-root/a/b/large"))
        #expect(listing.stdout.contains("squashfs-root/dev/big-minor"))

        let kernel = scratch.sub("kernel")
        try FileManager.default.createDirectory(atPath: kernel, withIntermediateDirectories: true)
        try await runChecked("mount", ["-t", "squashfs", "-o", "loop,ro,offset=\(offset)", image, kernel])
        do {
            expectSameTree(try await describeTreeOffThePool(kernel, times: true), expected, reader: "the kernel")
            // A name deep in the 10,000-entry listing, looked up directly (through the directory index).
            #expect(FileManager.default.fileExists(atPath: "\(kernel)/many/entry-09999-\(String(repeating: "n", count: 20))"))
            #expect(!FileManager.default.fileExists(atPath: "\(kernel)/many/entry-10000-\(String(repeating: "n", count: 20))"))
        }
        try await runChecked("umount", [kernel])

        let fuse = scratch.sub("squashfuse")
        try FileManager.default.createDirectory(atPath: fuse, withIntermediateDirectories: true)
        try await runChecked("squashfuse", ["-o", "offset=\(offset)", image, fuse])
        defer { detachMount(fuse) }
        // squashfuse 0.1.105 swaps the trusted. and security. prefixes and fails on empty values, on mksquashfs's
        // images too: its extended attributes are not compared.
        func withoutXattrs(_ tree: [String: TreeEntry]) -> [String: TreeEntry] { tree.mapValues { var entry = $0; entry.xattrs = [:]; return entry } }
        expectSameTree(withoutXattrs(try await describeTreeOffThePool(fuse, times: true)), withoutXattrs(expected), reader: "squashfuse")
        try await runChecked("fusermount3", ["-u", fuse])
    }

    @Test func theSameTreeGivesTheSameBytesWhateverTheNumberOfThreads() async throws {
        let scratch = try ScratchDirectory()
        let (first, second) = try await runBlocking {
            let source = scratch.sub("source")
            try makeAwkwardTree(source)
            var one = SquashfsWriter.Options()
            one.workers = 1
            one.modificationTime = 1_700_000_000
            var three = one
            three.workers = 3
            _ = try squash(source, into: scratch.sub("one.img"), options: one)
            _ = try squash(source, into: scratch.sub("three.img"), options: three)
            return (try Data(contentsOf: URL(fileURLWithPath: scratch.sub("one.img"))), try Data(contentsOf: URL(fileURLWithPath: scratch.sub("three.img"))))
        }
        #expect(first == second)
        #expect(first.prefix(4) == Data("hsqs".utf8))
    }

    @Test func aNewVersionCopiesTheBlocksOfEveryFileItSharesAndComesOutTheSame() async throws {
        let scratch = try ScratchDirectory()
        var options = SquashfsWriter.Options()
        options.modificationTime = 1_700_000_000
        let settings = options.settings
        let (first, second, sameBytes) = try await runBlocking { [options] in
            let base = scratch.sub("base")
            try makeAwkwardTree(base)
            let patch = scratch.sub("patch")
            try FileManager.default.createDirectory(atPath: "\(patch)/a/b", withIntermediateDirectories: true)
            try Data("v2\n".utf8).write(to: URL(fileURLWithPath: "\(patch)/version.txt"))
            try Data((0..<(2 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13) }).write(to: URL(fileURLWithPath: "\(patch)/a/b/new-large"))
            let first = try squash(base, into: scratch.sub("v1.img"), options: options)
            let v2 = ImageTree(layers: [try LayerEntries.fromDirectory(base), try LayerEntries.fromDirectory(patch)])
            let reuse = ReusableBlocks(candidates: [(scratch.sub("v1.img"), first.index)], settings: options.settings)
            let second = try squash(v2, into: scratch.sub("v2.img"), options: options, reuse: reuse)
            _ = try squash(v2, into: scratch.sub("v2-fresh.img"), options: options)
            let sameBytes = try Data(contentsOf: URL(fileURLWithPath: scratch.sub("v2.img"))) == Data(contentsOf: URL(fileURLWithPath: scratch.sub("v2-fresh.img")))
            return (first, second, sameBytes)
        }
        #expect(first.data.blocksReused == 0)
        // Only the new file's 16 blocks and the fragment blocks around the new tails are compressed again.
        #expect(second.data.blocksCompressed == 16)
        #expect(second.data.blocksReused == first.data.blocksCompressed)
        #expect(second.data.fragmentsCompressed <= 3)
        #expect(second.data.fragmentsReused >= first.data.fragmentsCompressed - 2)
        #expect(sameBytes)

        // An index whose file was truncated is not used: compression instead of wrong bytes.
        truncate(scratch.sub("v1.img"), 4096)
        let damaged = ReusableBlocks(candidates: [(scratch.sub("v1.img"), first.index)], settings: settings)
        #expect(damaged.sources.isEmpty)
        let other = ReusableBlocks(candidates: [(scratch.sub("v2.img"), second.index)], settings: "zlib level 6")
        #expect(other.sources.isEmpty)
        #expect(BlockIndex.decode(second.index.encoded())?.files.count == second.index.files.count)
        #expect(BlockIndex.decode(Array(second.index.encoded().dropLast())) == nil)
    }

    @Test func whatTheFormatCannotHoldIsRefusedWithTheReason() throws {
        let scratch = try ScratchDirectory()
        func attempt(_ entries: [LayerEntry]) -> SquashfsError? {
            do {
                _ = try squash(ImageTree(layers: [entries]), into: scratch.sub("refused.img"))
                return nil
            } catch let error as SquashfsError { return error } catch { return nil }
        }
        let longName = String(repeating: "x", count: 300)
        #expect(attempt([LayerEntry(path: longName, kind: .fifo, permissions: 0o644)])
            == .tooLarge(field: "a name's length", path: longName, value: 300, limit: 256))
        #expect(attempt([LayerEntry(path: "dev", kind: .blockDevice(major: 5000, minor: 1), permissions: 0o600)])
            == .tooLarge(field: "a device number", path: "dev", value: 5000, limit: 0xF_FFFF))
        #expect(attempt([LayerEntry(path: "lazy", kind: .regular(size: 10), permissions: 0o644, content: .estargz(layer: 0, name: "lazy"))])
            == .notLocal(path: "lazy"))
        try Data("short".utf8).write(to: URL(fileURLWithPath: scratch.sub("short")))
        let short = attempt([LayerEntry(path: "short", kind: .regular(size: 500_000), permissions: 0o644, content: .local(path: scratch.sub("short")))])
        #expect(short?.description.contains("shorter than the 500000 bytes its layer recorded") == true)
        var options = SquashfsWriter.Options()
        options.blockSize = 100_000
        #expect(throws: SquashfsError.self) { try squash(ImageTree(layers: [[]]), into: scratch.sub("bad.img"), options: options) }
    }
}
