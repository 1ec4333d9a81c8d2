@testable import CacheServer
import Testing
import TestSupport

@Suite(.tags(.unit)) struct ByteRangeRequestTests {
    @Test(arguments: [
        ("bytes=0-9", ByteRangeRequest.partial([0..<10])),
        ("bytes=500-1499", .partial([500..<1500])),
        ("bytes=500-", .partial([500..<2048])),
        ("bytes=-500", .partial([1548..<2048])),
        ("bytes=2000-5000", .partial([2000..<2048])),  // clamped, as the conformance suite expects
        ("bytes=0-0,10-19", .partial([0..<1, 10..<20])),
        ("bytes=-5000", .partial([0..<2048])),
        ("BYTES=1-2", .partial([1..<3])),
        ("items=0-5", .whole),  // another unit: ignored
        (nil, .whole),
    ] as [(String?, ByteRangeRequest)])
    func satisfiableRanges(header: String?, expected: ByteRangeRequest) {
        #expect(ByteRangeRequest(header: header, size: 2048) == expected)
    }

    @Test(arguments: [
        "bytes=500-0", "bytes=5000-10000", "bytes=abc-", "bytes=1-2-3", "bytes=-0", "bytes=", "bytes=99999999999999999999-",
        "bytes=" + (0..<65).map { "\($0)-\($0)" }.joined(separator: ","),
    ])
    func unsatisfiableRanges(header: String) {
        guard case .unsatisfiable = ByteRangeRequest(header: header, size: 2048) else {
            Issue.record("\(header.prefix(40)) was accepted")
            return
        }
    }

    @Test func rangesAskingForMoreThanTheBlobGetTheWholeBlob() {
        #expect(ByteRangeRequest(header: "bytes=0-1500,100-1800", size: 2048) == .whole)
    }
}
