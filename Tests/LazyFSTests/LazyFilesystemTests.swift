import Foundation
import FUSE
import ImageTree
import Logging
import OCI
import Registry
import Slipway
import Testing
import TestSupport

@testable import LazyFS

#if canImport(Glibc)
import Glibc
#endif

/// The FUSE side of a lazy mount over a tree of local files: what the kernel asks (offsets, sizes, statfs, lstat)
/// is answered as the kernel would answer it for extracted files, whatever the numbers.
@Suite(.tags(.unit)) final class LazyFilesystemTests {
    let directory: String

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("lazyfs-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    func filesystem(_ entries: [LayerEntry]) throws -> LazyFilesystem {
        let cache = try ChunkCache(root: "\(directory)/chunks", limit: 1 << 20)
        let fetcher = ChunkFetcher(cache: cache, counters: MountCounters(), timeout: .seconds(1))
        let image = LazyImage(tree: ImageTree(layers: [entries]), layers: [:], fetcher: fetcher, wholeLayers: 1)
        return LazyFilesystem(image: image, recorder: nil, logger: Logger(label: "test"))
    }

    func localFile(_ name: String, _ contents: [UInt8]) throws -> LayerEntry {
        let path = "\(directory)/\(name)"
        try Data(contents).write(to: URL(fileURLWithPath: path))
        return LayerEntry(path: name, kind: .regular(size: Int64(contents.count)), permissions: 0o644, content: .local(path: path))
    }

    func read(_ fs: LazyFilesystem, _ ino: UInt64, offset: Int64, size: Int) throws -> [UInt8] {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(size, 1), alignment: 8)
        defer { buffer.deallocate() }
        let count = try fs.read(ino, fh: 0, offset: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size]))
        return Array(buffer[0..<count])
    }

    @Test func readsAtTheEndOrWithOverflowingRangesAnswerLikeTheKernel() throws {
        let fs = try filesystem([try localFile("ten", Array(0..<10))])
        let ino = try #require(fs.image.tree.node(at: "ten")).ino
        #expect(try read(fs, ino, offset: 0, size: 4) == [0, 1, 2, 3])
        #expect(try read(fs, ino, offset: 8, size: 4096) == [8, 9])
        #expect(try read(fs, ino, offset: 10, size: 4096) == [])
        #expect(try read(fs, ino, offset: 1 << 40, size: 4096) == [])
        // offset + size past Int64.max: a short read (or none), not a trap.
        #expect(try read(fs, ino, offset: Int64.max - 5, size: 4096) == [])
        let node = try #require(fs.image.tree.node(at: "ten"))
        #expect(try fs.image.read(node, offset: 8, size: Int.max) == [8, 9])
        #expect(throws: LazyFSError.self) { try fs.image.read(node, offset: -1, size: 4) }
    }

    @Test func statfsAddsSizesWithoutOverflow() throws {
        let huge = Int64.max - 1
        let fs = try filesystem([
            LayerEntry(path: "a", kind: .regular(size: huge), permissions: 0o644, content: .local(path: "/dev/null")),
            LayerEntry(path: "b", kind: .regular(size: huge), permissions: 0o644, content: .local(path: "/dev/null")),
        ])
        #expect(fs.image.tree.totalBytes == UInt64.max)
        let statistics = try fs.statfs()
        #expect(statistics.blocks == UInt64.max / 4096 + 1)
        #expect(statistics.files == 3)
    }

    @Test func symlinksHaveMode0777WhateverTheLayerSays() throws {
        let fs = try filesystem([
            LayerEntry(path: "link", kind: .symlink(target: "target"), permissions: 0o644),
            LayerEntry(path: "other", kind: .symlink(target: "/etc/hosts"), permissions: 0),
        ])
        for name in ["link", "other"] {
            let node = try #require(fs.image.tree.node(at: name))
            #expect(try fs.getattr(node.ino).mode == UInt32(S_IFLNK) | 0o777, "\(name)")
            #expect(try fs.lookup(parent: ImageTree.rootIno, name: Array(name.utf8)).attributes.mode == UInt32(S_IFLNK) | 0o777)
        }
        // Other kinds keep the layer's permission bits.
        let file = try filesystem([try localFile("f", [1])])
        #expect(try file.getattr(try #require(file.image.tree.node(at: "f")).ino).mode == UInt32(S_IFREG) | 0o644)
    }
}
