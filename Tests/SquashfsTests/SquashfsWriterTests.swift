import CLinux
import Foundation
import ImageTree
import Testing
import TestSupport

@testable import Squashfs

#if canImport(Glibc)
import Glibc
#endif

/// A tree with what trips squashfs writers up: 255-byte names, 10,000 files in one directory (a listing of many
/// metadata blocks, so lookups go through the directory index), hard links across directories, sparse and empty
/// files, files of exactly one and two blocks, devices, a FIFO, long symlinks, extended attributes on files,
/// directories and links, setuid and sticky modes, owners beyond 16 bits and timestamps past 2038.
func makeAwkwardTree(_ root: String) throws {
    let files = FileManager.default
    for directory in ["a/b/c", "many", "links/one", "links/two", "dev", "empty-dir"] {
        try files.createDirectory(atPath: "\(root)/\(directory)", withIntermediateDirectories: true)
    }
    var random = SystemRandomNumberGenerator()
    func bytes(_ count: Int, compressible: Bool) -> Data {
        compressible
            ? Data((0..<count).map { UInt8(truncatingIfNeeded: $0 / 7 &* 31) })
            : Data((0..<count).map { _ in UInt8.random(in: 0...255, using: &random) })
    }
    try bytes(131_072, compressible: true).write(to: URL(fileURLWithPath: "\(root)/a/one-block"))
    try bytes(262_144, compressible: false).write(to: URL(fileURLWithPath: "\(root)/a/two-blocks-random"))
    try bytes(3 << 20 | 12345, compressible: true).write(to: URL(fileURLWithPath: "\(root)/a/b/large"))
    try Data().write(to: URL(fileURLWithPath: "\(root)/a/empty"))
    try Data("same bytes\n".utf8).write(to: URL(fileURLWithPath: "\(root)/a/b/c/duplicate-1"))
    try Data("same bytes\n".utf8).write(to: URL(fileURLWithPath: "\(root)/a/duplicate-2"))
    // Sparse: a hole, 4 KiB of data in the second block, a hole to 1 MiB.
    let sparse = open("\(root)/a/sparse", O_WRONLY | O_CREAT, 0o644)
    _ = [UInt8](repeating: 0x5A, count: 4096).withUnsafeBytes { pwrite(sparse, $0.baseAddress, 4096, 200_000) }
    ftruncate(sparse, 1 << 20)
    close(sparse)
    try Data("linked\n".utf8).write(to: URL(fileURLWithPath: "\(root)/links/one/file"))
    link("\(root)/links/one/file", "\(root)/links/two/same-file")
    link("\(root)/links/one/file", "\(root)/links/third-name")
    setxattr("\(root)/links/one/file", "user.origin", "layer", 5, 0)
    let longName = String(repeating: "n", count: 250) + ".text"
    try Data("long name\n".utf8).write(to: URL(fileURLWithPath: "\(root)/a/\(longName)"))
    for index in 0..<10_000 {
        try Data("file \(index)\n".utf8).write(to: URL(fileURLWithPath: "\(root)/many/entry-\(String(format: "%05d", index))-\(longName.prefix(20))"))
    }
    try files.createSymbolicLink(atPath: "\(root)/a/relative-link", withDestinationPath: "b/large")
    try files.createSymbolicLink(atPath: "\(root)/a/long-link", withDestinationPath: String(repeating: "x/", count: 600) + "end")
    try files.createSymbolicLink(atPath: "\(root)/a/dangling", withDestinationPath: "/nowhere")
    lsetxattr("\(root)/a/dangling", "trusted.link-note", "kept", 4, 0)
    mknod("\(root)/dev/null-like", S_IFCHR | 0o666, deviceNumber(1, 3))
    mknod("\(root)/dev/big-minor", S_IFCHR | 0o600, deviceNumber(250, 70000))
    mknod("\(root)/dev/loop-like", S_IFBLK | 0o660, deviceNumber(7, 0))
    mkfifo("\(root)/dev/pipe", 0o640)
    setxattr("\(root)/a/b", "user.directory", "yes", 3, 0)
    setxattr("\(root)/a/b/large", "security.capability-like", "\u{1}\u{2}", 2, 0)
    setxattr("\(root)/a/b/large", "user.empty", "", 0, 0)
    chmod("\(root)/a/one-block", 0o4755)
    chmod("\(root)/empty-dir", 0o1777)
    chown("\(root)/a/two-blocks-random", 1000, 1000)
    chown("\(root)/a/b/c", 4_000_000, 65534)
    lchown("\(root)/a/relative-link", 1234, 5678)
    // Times last: every change above moves its directory's.
    var index = 0
    for path in (files.enumerator(atPath: root)?.allObjects as? [String] ?? []).sorted().reversed() {
        index += 1
        let seconds = index % 3 == 0 ? 4_102_444_800 + index : 1_600_000_000 + index * 37
        var times = [timespec(tv_sec: seconds, tv_nsec: 0), timespec(tv_sec: seconds, tv_nsec: 0)]
        utimensat(AT_FDCWD, "\(root)/\(path)", &times, AT_SYMLINK_NOFOLLOW)
    }
}

/// glibc's makedev, which Swift does not import.
func deviceNumber(_ major: UInt64, _ minor: UInt64) -> dev_t {
    dev_t((minor & 0xFF) | (major & 0xFFF) << 8 | (minor & ~0xFF) << 12 | (major & ~0xFFF) << 32)
}

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
    @Test func theKernelUnsquashfsAndSquashfuseReadTheTreeAsWritten() async throws {
        let scratch = try ScratchDirectory()
        let source = scratch.sub("source")
        try makeAwkwardTree(source)
        let expected = try describeTree(source, times: true)
        let image = scratch.sub("image.sif")
        let offset: Int64 = 3 * 4096
        let report = try squash(source, into: image, offset: offset)
        #expect(report.bytes % 4096 == 0)
        #expect(Int64(report.bytes) + offset == Int64(try FileManager.default.attributesOfItem(atPath: image)[.size] as! Int))
        #expect(report.data.duplicateFiles >= 1)

        let extracted = scratch.sub("unsquashfs")
        try await runChecked("unsquashfs", ["-no-progress", "-o", String(offset), "-d", extracted, image])
        try expectSameTree(try describeTree(extracted, times: true), expected, reader: "unsquashfs -d")
        let listing = try await runChecked("unsquashfs", ["-lls", "-o", String(offset), image])
        #expect(listing.stdout.contains("squashfs-root/a/b/large"))
        #expect(listing.stdout.contains("squashfs-root/dev/big-minor"))

        let kernel = scratch.sub("kernel")
        try FileManager.default.createDirectory(atPath: kernel, withIntermediateDirectories: true)
        try await runChecked("mount", ["-t", "squashfs", "-o", "loop,ro,offset=\(offset)", image, kernel])
        do {
            try expectSameTree(try describeTree(kernel, times: true), expected, reader: "the kernel")
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
        try expectSameTree(withoutXattrs(try describeTree(fuse, times: true)), withoutXattrs(expected), reader: "squashfuse")
        try await runChecked("fusermount3", ["-u", fuse])
    }

    @Test func theSameTreeGivesTheSameBytesWhateverTheNumberOfThreads() throws {
        let scratch = try ScratchDirectory()
        let source = scratch.sub("source")
        try makeAwkwardTree(source)
        var one = SquashfsWriter.Options()
        one.workers = 1
        one.modificationTime = 1_700_000_000
        var three = one
        three.workers = 3
        _ = try squash(source, into: scratch.sub("one.img"), options: one)
        _ = try squash(source, into: scratch.sub("three.img"), options: three)
        let first = try Data(contentsOf: URL(fileURLWithPath: scratch.sub("one.img")))
        #expect(first == (try Data(contentsOf: URL(fileURLWithPath: scratch.sub("three.img")))))
        #expect(first.prefix(4) == Data("hsqs".utf8))
    }

    @Test func aNewVersionCopiesTheBlocksOfEveryFileItSharesAndComesOutTheSame() async throws {
        let scratch = try ScratchDirectory()
        let base = scratch.sub("base")
        try makeAwkwardTree(base)
        let patch = scratch.sub("patch")
        try FileManager.default.createDirectory(atPath: "\(patch)/a/b", withIntermediateDirectories: true)
        try Data("v2\n".utf8).write(to: URL(fileURLWithPath: "\(patch)/version.txt"))
        try Data((0..<(2 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13) }).write(to: URL(fileURLWithPath: "\(patch)/a/b/new-large"))
        var options = SquashfsWriter.Options()
        options.modificationTime = 1_700_000_000
        let first = try squash(base, into: scratch.sub("v1.img"), options: options)
        #expect(first.data.blocksReused == 0)

        let v2 = ImageTree(layers: [try LayerEntries.fromDirectory(base), try LayerEntries.fromDirectory(patch)])
        let reuse = ReusableBlocks(candidates: [(scratch.sub("v1.img"), first.index)], settings: options.settings)
        let second = try squash(v2, into: scratch.sub("v2.img"), options: options, reuse: reuse)
        // Only the new file's 16 blocks and the fragment blocks around the new tails are compressed again.
        #expect(second.data.blocksCompressed == 16)
        #expect(second.data.blocksReused == first.data.blocksCompressed)
        #expect(second.data.fragmentsCompressed <= 3)
        #expect(second.data.fragmentsReused >= first.data.fragmentsCompressed - 2)

        _ = try squash(v2, into: scratch.sub("v2-fresh.img"), options: options)
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.sub("v2.img"))) == (try Data(contentsOf: URL(fileURLWithPath: scratch.sub("v2-fresh.img")))))

        // An index whose file was truncated is not used: compression instead of wrong bytes.
        truncate(scratch.sub("v1.img"), 4096)
        let damaged = ReusableBlocks(candidates: [(scratch.sub("v1.img"), first.index)], settings: options.settings)
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

func expectSameTree(_ actual: [String: TreeEntry], _ expected: [String: TreeEntry], reader: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    #expect(actual.count == expected.count, "\(reader) shows \(actual.count) paths, the source has \(expected.count)", sourceLocation: sourceLocation)
    var differences = 0
    for (path, entry) in expected.sorted(by: { $0.key < $1.key }) where actual[path] != entry {
        differences += 1
        if differences <= 5 {
            Issue.record("\(reader): /\(path) is \(actual[path].map(String.init(describing:)) ?? "missing"), expected \(entry)", sourceLocation: sourceLocation)
        }
    }
}
