import Archive
import Foundation
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Hostile and unusual inputs found in review: each once let a layer escape, crash, balloon, or fail.
@Suite(.tags(.unit)) struct ReviewRegressionTests {
    /// U+0600 combines with a following "/" into one Swift Character: a character-wise split saw one component,
    /// the kernel saw two and followed the symlink out of the root.
    @Test func combiningMarkCannotHideASeparator() throws {
        let sb = Sandbox()
        let sneaky = "s\u{600}"
        try sb.apply(try makeTar { w in
            try w.write(symlink(sneaky, to: sb.sibling))
            try w.add(file("\(sneaky)/evil", "pwned"))
            try w.write(symlink("t\u{301}", to: "../sibling"))
            try w.add(file("t\u{301}/evil2", "pwned"))
        })
        #expect(sb.siblingContents().isEmpty)
        #expect(readBytes(sb.target + sb.sibling + "/evil") == Array("pwned".utf8))
    }

    @Test func whiteoutWithCombiningMarkCannotDeleteOutside() throws {
        let sb = Sandbox()
        try writeBytes(sb.sibling + "/keep", Array("keep".utf8))
        _ = try? sb.apply(try makeTar { w in
            try w.write(symlink("s\u{600}", to: sb.sibling))
            try w.add(file(".wh.s\u{600}/keep", ""))
        })
        #expect(readBytes(sb.sibling + "/keep") == Array("keep".utf8))
    }

    @Test func canonicallyEquivalentNamesStayDistinct() throws {
        let sb = Sandbox()
        try sb.apply(try makeTar { w in
            try w.write(dir("caf\u{e9}"))
            try w.write(dir("cafe\u{301}"))
            try w.add(file("caf\u{e9}/a", "nfc"))
            try w.add(file("cafe\u{301}/b", "nfd"))
        })
        #expect(readBytes(sb.target + "/cafe\u{301}/b") == Array("nfd".utf8))
        #expect(!exists(sb.target + "/caf\u{e9}/b"))
    }

    @Test func replacedSymlinkIsNotUsedFromTheCache() throws {
        let sb = Sandbox()
        try sb.apply(try makeTar { w in
            try w.write(dir("x"))
            try w.write(dir("y"))
            try w.write(symlink("l", to: "x"))
            try w.add(file("l/f1", "1"))
            try w.write(symlink("l", to: "y"))
            try w.add(file("l/f2", "2"))
        })
        #expect(exists(sb.target + "/x/f1"))
        #expect(exists(sb.target + "/y/f2"))
        #expect(!exists(sb.target + "/x/f2"))
    }

    @Test func extremePaxMtimeIsAnErrorNotACrash() throws {
        let sb = Sandbox()
        let record = paxRecord("mtime", "-9223372036854775808.5")
        let tar = try makeTar { w in
            try w.write(TarHeader(name: "PaxHeaders/f", type: .other(UInt8(ascii: "x")), size: Int64(record.count)), contents: record)
            try w.add(file("f", "x"))
        }
        #expect(throws: ArchiveError.self) { try sb.apply(tar) }
    }

    @Test func overlongNamesAreRefused() throws {
        let sb = Sandbox()
        let deep = Array(repeating: String(repeating: "d", count: 200), count: 30).joined(separator: "/") + "/f"
        #expect(throws: ArchiveError.self) { try sb.apply(try makeTar { w in try w.add(file(deep, "x")) }) }
        let wide = String(repeating: "w", count: 300)
        #expect(throws: ArchiveError.self) { try sb.apply(try makeTar { w in try w.add(file(wide, "x")) }) }
    }

    @Test func overlayXattrsFromTheLayerAreIgnored() throws {
        let sb = Sandbox()
        var entry = file("f", "x")
        entry.0.xattrs = ["trusted.overlay.opaque": Array("y".utf8)]
        let result = try sb.apply(try makeTar { w in try w.add(entry) }, options: ApplyOptions(whiteouts: .overlay))
        #expect(result.skipped.contains { $0.contains("reserved for overlayfs") })
    }

    /// ISA-L 2.30 mis-parses a gzip member header split across input buffers; we parse headers ourselves.
    @Test(arguments: [1, 7, 11, 4096])
    func gzipHeadersSplitAcrossReadsDecode(pieceSize: Int) async throws {
        let sb = Sandbox()
        let tar = try makeTar { w in
            try w.add(file("a", String(repeating: "alpha ", count: 3000)))
            try w.add(file("b", String(repeating: "beta ", count: 3000)))
        }
        // Two members, each with a file name in its header (what `gzip -c NAME` writes).
        let first = try await gnuGzip(Array(tar[..<4096]), name: "first-member-name.tar", in: sb.base)
        let second = try await gnuGzip(Array(tar[4096...]), name: "second-member-name.tar", in: sb.base)
        let blob = first + second
        let pieces = stride(from: 0, to: blob.count, by: pieceSize).map { Array(blob[$0..<min($0 + pieceSize, blob.count)]) }
        let queue = PieceQueue(pieces)
        let result = try LayerApplier.apply(from: ChunkSource { queue.next() }, compression: .gzip, to: sb.target)
        #expect(result.uncompressedSize == Int64(tar.count))
        #expect(readBytes(sb.target + "/b") == Array(String(repeating: "beta ", count: 3000).utf8))
    }
}

/// One PAX record, "LEN key=value\n", where LEN counts its own digits.
func paxRecord(_ key: String, _ value: String) -> [UInt8] {
    let body = " \(key)=\(value)\n".utf8.count
    var length = body + 1
    while String(length).count + body != length { length += 1 }
    return Array("\(length) \(key)=\(value)\n".utf8)
}

/// Pieces handed out one at a time to a ChunkSource.
final class PieceQueue: @unchecked Sendable {
    private var pieces: [[UInt8]]
    private let lock = NSLock()
    init(_ pieces: [[UInt8]]) { self.pieces = pieces.reversed() }
    func next() -> [UInt8]? { lock.withLock { pieces.popLast() } }
}

/// GNU gzip of `bytes` with the original file name recorded in the header (FNAME).
func gnuGzip(_ bytes: [UInt8], name: String, in directory: String) async throws -> [UInt8] {
    let path = "\(directory)/\(name)"
    try writeBytes(path, bytes)
    try await runChecked("/bin/gzip", ["-kNf", path])
    defer { unlink(path + ".gz"); unlink(path) }
    return try #require(readBytes(path + ".gz"))
}
