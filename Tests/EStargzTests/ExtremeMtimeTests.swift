import Archive
import Foundation
import Testing
import TestSupport

@testable import EStargz

/// PAX mtimes may be any Int64: the eStargz writer must convert them all, keeping the exact value in the tar and
/// a TOC date RFC 3339 can express.
@Suite(.tags(.unit)) struct ExtremeMtimeTests {
    @Test func tocModtimesAreClampedToFourDigitYears() {
        #expect(formatModtime(TarTimestamp(seconds: .min)) == "0000-01-01T00:00:00Z")
        #expect(formatModtime(TarTimestamp(seconds: .min, nanoseconds: 999_999_999)) == "0000-01-01T00:00:01Z")
        #expect(formatModtime(TarTimestamp(seconds: .max)) == "9999-12-31T23:59:59Z")
        #expect(formatModtime(TarTimestamp(seconds: .max, nanoseconds: 999_999_999)) == "9999-12-31T23:59:59Z")
        #expect(formatModtime(TarTimestamp(seconds: -1)) == "1969-12-31T23:59:59Z")
        #expect(formatModtime(TarTimestamp(seconds: 253_402_300_800)) == "9999-12-31T23:59:59Z")
    }

    @Test func aLayerWithMtimesAtBothEndsOfInt64Converts() throws {
        let times = [
            TarTimestamp(seconds: .max), TarTimestamp(seconds: .min), TarTimestamp(seconds: .max, nanoseconds: 999_999_999),
            TarTimestamp(seconds: .min, nanoseconds: 1),
        ]
        var w = TarWriter()
        for (index, time) in times.enumerated() {
            try w.write(TarHeader(name: "f\(index)", type: .regular, mode: 0o644, mtime: time), contents: Array("x".utf8))
        }
        try w.finish()
        let (blob, _) = try convert(w.bytes, chunk: 64 << 10)
        let reader = TarReader(bytes: try gunzip(blob))
        var seen: [String: TarTimestamp] = [:]
        while let header = try reader.next() { seen[header.name] = header.mtime }
        for (index, time) in times.enumerated() { #expect(seen["f\(index)"] == time) }
    }
}
