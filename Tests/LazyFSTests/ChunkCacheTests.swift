import Foundation
import OCI
import Testing
import TestSupport

@testable import LazyFS

@Suite(.tags(.unit)) struct ChunkCacheTests {
    func scratch() throws -> String {
        let path = NSTemporaryDirectory() + "/chunk-cache-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func storesReadsAndDropsATornChunk() throws {
        let root = try scratch()
        let bytes = Array("hello chunk".utf8)
        let digest = Digest.sha256(of: bytes)
        let cache = try ChunkCache(root: root, limit: 1 << 20)
        try cache.store(digest, bytes: bytes)
        #expect(cache.read(digest, offset: 6, length: 5) == Array("chunk".utf8))

        // Another process (a fresh cache object) finds the file torn: it is removed, not served.
        try Data("hello ch".utf8).write(to: URL(fileURLWithPath: cache.path(digest)))
        let other = try ChunkCache(root: root, limit: 1 << 20)
        #expect(other.read(digest, offset: 0, length: 5) == nil)
        #expect(!other.contains(digest))
    }

    @Test func evictsTheOldestChunksOverTheLimit() throws {
        let root = try scratch()
        let cache = try ChunkCache(root: root, limit: 10_000)
        var digests: [Digest] = []
        for i in 0..<6 {
            let bytes = [UInt8](repeating: UInt8(i), count: 3000)
            let digest = Digest.sha256(of: bytes)
            try cache.store(digest, bytes: bytes)
            // Distinct modification times: eviction goes by age.
            var times = [timespec(tv_sec: 1_000_000 + i, tv_nsec: 0), timespec(tv_sec: 1_000_000 + i, tv_nsec: 0)]
            utimensat(AT_FDCWD, cache.path(digest), &times, 0)
            digests.append(digest)
        }
        #expect(cache.size <= 9000)
        #expect(cache.contains(digests[5]))
        #expect(!cache.contains(digests[0]))
    }
}
