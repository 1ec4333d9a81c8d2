import ContentStore
import Foundation
import Images
import OCI
import Registry
import Slipway
import Testing
import TestSupport

/// Multi-range reads of a blob: one request to docker-registry, and the right bytes whatever the server does with
/// the ranges (multipart answer, the whole blob, or a refusal).
@Suite(.tags(.integration)) struct RangeRequestTests {
    @Test func severalRangesInOneRequest() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { _, proxy in
            try await withSession(try makeSession()) { session in
                let layout = try makeDemoLayout(scratch, largeFileBytes: 2 << 20)
                let reference = try ImageLocation(parsing: "\(proxy.host)/demo:v1")
                _ = try await push(layout, to: "\(proxy.host)/demo:v1", session: session)
                let image = try await LayoutImageSource(store: layout, imageName: "demo").resolve()
                let large = try #require(image.manifest.layers.max { $0.size < $1.size })
                let blob = Array(try Data(contentsOf: URL(fileURLWithPath: layout.blobPath(large.digest))))
                let ranges: [Range<Int64>] = [10..<20, 4096..<70_000, Int64(blob.count) - 5..<Int64(blob.count)]
                let expected = ranges.map { Array(blob[Int($0.lowerBound)..<Int($0.upperBound)]) }
                let source = try session.source(for: reference)

                proxy.clearLog()
                #expect(try await source.readRanges(large, ranges: ranges) == expected)
                let gets = proxy.requests(matching: "/blobs/\(large.digest)", method: "GET")
                #expect(gets.count == 1)
                #expect(gets.first?.range == "bytes=10-19,4096-69999,\(blob.count - 5)-\(blob.count - 1)")
                #expect(gets.first?.status == 206)

                // A server that ignores Range: the whole blob, read as far as the last range.
                proxy.inject(.ignoreRange, path: "/blobs/\(large.digest)")
                #expect(try await source.readRanges(large, ranges: ranges) == expected)

                // A server that refuses several ranges: one request per range.
                proxy.clearLog()
                proxy.inject(.status(400), path: "/blobs/\(large.digest)")
                #expect(try await source.readRanges(large, ranges: ranges) == expected)
                #expect(proxy.requests(matching: "/blobs/\(large.digest)", method: "GET").count == 1 + ranges.count)
            }
        }
    }
}
