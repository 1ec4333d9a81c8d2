import Archive
import Foundation
import Testing
import TestSupport

/// Numbers in tar headers come from the archive: every value either parses exactly or is an `invalidHeader`.
@Suite(.tags(.unit)) struct NumericFieldTests {
    /// A one-entry tar whose mtime field (12 bytes at 136) holds `field`, with the checksum recomputed.
    func tarWithMtimeField(_ field: [UInt8]) throws -> [UInt8] {
        var tar = try makeTar { w in try w.add(file("f", "x")) }
        tar.replaceSubrange(136..<148, with: field)
        tar.replaceSubrange(148..<156, with: [UInt8](repeating: UInt8(ascii: " "), count: 8))
        let sum = tar[0..<512].reduce(0) { $0 + Int($1) }
        let octal = Array(String(sum, radix: 8).utf8)
        tar.replaceSubrange(148..<156, with: [UInt8](repeating: UInt8(ascii: "0"), count: 6 - octal.count) + octal + [0, UInt8(ascii: " ")])
        return tar
    }

    func mtime(_ field: [UInt8]) throws -> Int64? {
        try TarReader(bytes: try tarWithMtimeField(field)).next()?.mtime.seconds
    }

    @Test func base256ExtremesOfInt64Parse() throws {
        #expect(try mtime([0x80, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]) == .max)
        #expect(try mtime([0xff, 0xff, 0xff, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0]) == .min)
        #expect(try mtime([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]) == -2)
    }

    /// Eight significant bytes whose top bit disagrees with the sign do not fit in an Int64: they used to wrap
    /// around to a value of the other sign.
    @Test(arguments: [
        [UInt8]([0x80, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0]),
        [0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        [0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        [0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
    ])
    func base256ValuesBeyondInt64AreInvalid(field: [UInt8]) throws {
        let kind = archiveKind { _ = try mtime(field) }
        guard case .invalidHeader(_, let detail) = kind else {
            Issue.record("expected invalidHeader, got \(String(describing: kind))")
            return
        }
        #expect(detail.contains("overflows"))
    }
}
