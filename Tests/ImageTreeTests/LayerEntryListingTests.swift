import Blocking
import Foundation
import Testing
import TestSupport

@testable import ImageTree

/// A layer directory's entries survive the trip through bytes, relative to wherever the directory is, and a
/// listing that was damaged or belongs to nothing decodes to nil (the caller walks the directory instead).
@Suite(.tags(.unit)) struct LayerEntryListingTests {
    @Test func aListingReadsBackAsTheWalkOfTheDirectory() async throws {
        let scratch = try ScratchDirectory()
        let root = scratch.sub("layer")
        let (walked, encoded) = try await runBlocking {
            try makeAwkwardTree(root)
            let walked = try LayerEntries.fromDirectory(root)
            return (walked, LayerEntryListing.encode(walked, root: root))
        }
        let decoded = try #require(LayerEntryListing.decode(encoded, root: root))
        #expect(decoded.count == walked.count && walked.count > 10_000)
        for (a, b) in zip(walked, decoded) {
            #expect(a.path == b.path && a.kind == b.kind && a.permissions == b.permissions && a.uid == b.uid && a.gid == b.gid)
            #expect(a.mtime == b.mtime && a.xattrs == b.xattrs && a.content == b.content)
        }
        // The same listing under another root names files there.
        let moved = try #require(LayerEntryListing.decode(encoded, root: "/elsewhere"))
        #expect(moved.contains { $0.content == .local(path: "/elsewhere/a/b/large") })

        var flipped = encoded
        flipped[flipped.count / 2] ^= 0xFF
        #expect(LayerEntryListing.decode(flipped, root: root) == nil)
        #expect(LayerEntryListing.decode(Array(encoded.dropLast()), root: root) == nil)
        #expect(LayerEntryListing.decode([], root: root) == nil)
    }
}
