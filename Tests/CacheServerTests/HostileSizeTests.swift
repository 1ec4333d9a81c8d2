@testable import CacheServer
import Testing
import TestSupport

/// A blob's size comes from an upstream manifest and may be anything up to Int64.max; ranges against it must not
/// overflow while they are added up.
@Suite(.tags(.unit)) struct HostileSizeTests {
    @Test func rangesOfAHugeBlobThatAddUpBeyondInt64AreServedWhole() {
        // Each range is Int64.max bytes: their sum overflows.
        #expect(ByteRangeRequest(header: "bytes=0-,0-", size: Int64.max) == .whole)
        #expect(ByteRangeRequest(header: "bytes=-999999999999999999,0-", size: Int64.max) == .whole)
    }

    @Test func disjointRangesOfAHugeBlobStayPartial() {
        let size = Int64.max
        #expect(
            ByteRangeRequest(header: "bytes=0-9,922337203685477580-", size: size)
                == .partial([0..<10, 922_337_203_685_477_580..<size]))
    }
}
