import Archive
import Testing
import TestSupport

@Suite(.tags(.unit)) struct TarReaderWriterTests {
    func readAll(_ tar: [UInt8], pieceSize: Int = Int.max) throws -> [(TarHeader, [UInt8])] {
        let reader = TarReader(source: ArrayByteSource(tar, pieceSize: pieceSize))
        var out: [(TarHeader, [UInt8])] = []
        while let h = try reader.next() { out.append((h, try reader.readContents())) }
        return out
    }

    static let longName = String(repeating: "d123456789/", count: 12) + "file-with-a-long-name.txt"  // > 100
    static let veryLongName = String(repeating: "abcdefghijklmnopqrstuvwxyz/", count: 12) + String(repeating: "n", count: 120)  // > 255, component > 100

    func sampleEntries() -> [(TarHeader, [UInt8])] {
        var entries: [(TarHeader, [UInt8])] = []
        entries.append((dir("d/", mode: 0o750), []))
        entries.append(file("d/hello.txt", "hello world", mode: 0o640))
        entries.append((TarHeader(name: "d/big", type: .regular, mode: 0o600), randomBytes(70_001)))
        entries.append((TarHeader(name: "d/empty", type: .regular), []))
        entries.append((symlink("d/link", to: "hello.txt"), []))
        entries.append((hardlink("d/hard", to: "d/hello.txt"), []))
        entries.append((TarHeader(name: "d/fifo", type: .fifo, mode: 0o600), []))
        entries.append((TarHeader(name: "d/null", type: .characterDevice, mode: 0o666, devMajor: 1, devMinor: 3), []))
        entries.append((TarHeader(name: "d/blk", type: .blockDevice, mode: 0o660, devMajor: 259, devMinor: 70000), []))
        entries.append(file(Self.longName, "long"))
        entries.append(file(Self.veryLongName, "very long"))
        entries.append((symlink("d/longlink", to: String(repeating: "t", count: 300)), []))
        var x = TarHeader(name: "d/xattr", type: .regular, uid: 3_000_000, gid: 77, uname: "someone", gname: "group",
                          mtime: TarTimestamp(seconds: 1_234_567_890, nanoseconds: 123_456_789))
        x.xattrs = ["user.comment": Array("hi".utf8), "security.capability": [1, 0, 0, 2, 0, 0x20, 0, 0]]
        entries.append((x, Array("x".utf8)))
        entries.append(file("ünïcødé/ファイル", "utf8"))
        return entries
    }

    func check(_ parsed: [(TarHeader, [UInt8])], against expected: [(TarHeader, [UInt8])]) {
        #expect(parsed.count == expected.count)
        for ((h, body), (e, eb)) in zip(parsed, expected) {
            let name = e.type == .directory && !e.name.hasSuffix("/") ? e.name + "/" : e.name
            #expect(h.name == name)
            #expect(h.type == e.type)
            #expect(h.mode == e.mode, "\(h.name)")
            #expect(h.linkName == e.linkName)
            #expect(h.uid == e.uid && h.gid == e.gid)
            #expect(h.uname == e.uname && h.gname == e.gname)
            #expect(h.mtime == e.mtime, "\(h.name)")
            #expect(h.devMajor == e.devMajor && h.devMinor == e.devMinor)
            #expect(h.xattrs == e.xattrs)
            #expect(body == eb, "\(h.name)")
            #expect(h.size == Int64(eb.count))
        }
    }

    @Test(arguments: [TarWriter.LongNameFormat.pax, .gnu], [Int.max, 1, 7, 512, 513, 4096])
    func roundTrip(format: TarWriter.LongNameFormat, pieceSize: Int) throws {
        let entries = sampleEntries()
        let tar = try makeTar(format: format) { w in for e in entries { try w.add(e) } }
        #expect(tar.count % 512 == 0)
        #expect(tar.suffix(1024).allSatisfy { $0 == 0 })
        check(try readAll(tar, pieceSize: pieceSize), against: entries)
    }

    @Test func gnuFormatUsesLongLinkRecords() throws {
        let tar = try makeTar(format: .gnu) { w in try w.add(file(Self.veryLongName, "x")) }
        #expect(tar[156] == UInt8(ascii: "L"))
        #expect(try readAll(tar)[0].0.name == Self.veryLongName)
    }

    @Test func paxGlobalHeaderAppliesToFollowingEntries() throws {
        let global = Array("20 uname=globaluser\n".utf8)
        let tar = try makeTar { w in
            try w.write(TarHeader(name: "pax_global_header", type: .other(UInt8(ascii: "g"))), contents: global)
            try w.add(file("a", "1"))
            try w.add(file("b", "2"))
        }
        let parsed = try readAll(tar)
        #expect(parsed.map(\.0.name) == ["a", "b"])
        #expect(parsed.allSatisfy { $0.0.uname == "globaluser" })
    }

    @Test func negativeAndFractionalPaxMtime() throws {
        let h = TarHeader(name: "old", type: .regular, mtime: TarTimestamp(seconds: -2, nanoseconds: 500_000_000))
        let tar = try makeTar { w in try w.write(h) }
        #expect(try readAll(tar)[0].0.mtime == h.mtime)
    }

    @Test func base256NumericFields() throws {
        var tar = try makeTar { w in try w.add(file("f", "abc")) }
        // uid field (offset 108, 8 bytes) as base-256: 0x80 00 00 00 00 01 E2 40 = 123456
        let uid: [UInt8] = [0x80, 0, 0, 0, 0, 0x01, 0xE2, 0x40]
        for i in 0..<8 { tar[108 + i] = uid[i] }
        rechecksum(&tar, at: 0)
        #expect(try readAll(tar)[0].0.uid == 123_456)
    }

    @Test func checksumMismatchIsRejected() throws {
        var tar = try makeTar { w in try w.add(file("f", "abc")) }
        tar[0] ^= 0x01
        let kind = archiveKind { _ = try readAll(tar) }
        guard case .invalidHeader = kind else {
            Issue.record("expected invalidHeader, got \(String(describing: kind))")
            return
        }
    }

    @Test func cleanEOFWithoutEndBlocks() throws {
        let tar = try makeTar { w in try w.add(file("f", "abc")) }
        let parsed = try readAll(Array(tar.dropLast(1024)))
        #expect(parsed.count == 1)
    }

    @Test func truncatedBodyIsReported() throws {
        let tar = try makeTar { w in try w.add((TarHeader(name: "f", type: .regular), randomBytes(5000))) }
        let kind = archiveKind { _ = try readAll(Array(tar.prefix(512 + 1000))) }
        guard case .truncated = kind else {
            Issue.record("expected truncated, got \(String(describing: kind))")
            return
        }
    }

    @Test func hugeClaimedSizeDoesNotAllocate() throws {
        var tar = try makeTar { w in try w.add(file("f", "abc")) }
        // claim 64 GiB via base-256 size
        let size: [UInt8] = [0x80, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0]
        for i in 0..<12 { tar[124 + i] = size[i] }
        rechecksum(&tar, at: 0)
        let reader = TarReader(bytes: tar)
        let h = try reader.next()
        #expect(h?.size == 64 << 30)
        let kind = archiveKind { try reader.readContents { _ in } }
        guard case .truncated = kind else {
            Issue.record("expected truncated, got \(String(describing: kind))")
            return
        }
    }

    @Test func hugePaxRecordIsRefused() throws {
        var tar = try makeTar { w in try w.write(TarHeader(name: "x", type: .other(UInt8(ascii: "x"))), contents: [UInt8](repeating: 0x31, count: 10)) }
        let size: [UInt8] = [0x80, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0]
        for i in 0..<12 { tar[124 + i] = size[i] }
        rechecksum(&tar, at: 0)
        let kind = archiveKind { _ = try readAll(tar) }
        guard case .limitExceeded = kind else {
            Issue.record("expected limitExceeded, got \(String(describing: kind))")
            return
        }
    }

    @Test func streamingWriterSinkMatchesInMemory() throws {
        var chunks: [[UInt8]] = []
        var w = TarWriter(sink: { chunks.append($0) })
        let big = randomBytes(3 << 20)
        var h = TarHeader(name: "big", type: .regular)
        h.size = Int64(big.count)
        try w.writeHeader(h)
        try w.writeContents(Array(big[..<1000]))
        try w.writeContents(Array(big[1000...]))
        try w.finish()
        let tar = chunks.flatMap { $0 }
        #expect(try readAll(tar)[0].1 == big)
    }
}

func rechecksum(_ tar: inout [UInt8], at offset: Int) {
    for i in 148..<156 { tar[offset + i] = UInt8(ascii: " ") }
    var sum = 0
    for i in 0..<512 { sum += Int(tar[offset + i]) }
    let octal = Array(String(sum, radix: 8).utf8)
    let padded = [UInt8](repeating: UInt8(ascii: "0"), count: 6 - octal.count) + octal
    for i in 0..<6 { tar[offset + 148 + i] = padded[i] }
    tar[offset + 154] = 0
}
