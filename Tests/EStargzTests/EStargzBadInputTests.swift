import Archive
import Foundation
import OCI
import Testing
import TestSupport

@testable import EStargz

// MARK: - Helpers

/// The layer name every bad-input test passes, so each can check that errors name it.
let badLayer = "sha256:" + String(repeating: "ab", count: 32)

/// A 51-byte eStargz footer, built here so these tests do not depend on the writer.
func craftedEStargzFooter(_ tocOffsetField: String) -> [UInt8] {
    precondition(tocOffsetField.utf8.count == 16)
    return [0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0, UInt8(ascii: "S"), UInt8(ascii: "G"), 22, 0]
        + Array(tocOffsetField.utf8) + Array("STARGZ".utf8) + [1, 0, 0, 0xff, 0xff] + [UInt8](repeating: 0, count: 8)
}

/// A 47-byte legacy stargz (google/crfs) footer: Extra field = `%016x` + `STARGZ`, no subfield header.
func craftedLegacyFooter(_ tocOffsetField: String) -> [UInt8] {
    precondition(tocOffsetField.utf8.count == 16)
    return [0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 22, 0]
        + Array(tocOffsetField.utf8) + Array("STARGZ".utf8) + [1, 0, 0, 0xff, 0xff] + [UInt8](repeating: 0, count: 8)
}

func hex16(_ v: Int64) -> String {
    let h = String(UInt64(bitPattern: v), radix: 16)
    return String(repeating: "0", count: 16 - h.count) + h
}

/// A blob built by hand, with the TOC the test wants.
struct CraftedBlob {
    var blob: [UInt8]
    var tocOffset: Int64
    var tocJSON: [UInt8]
    /// The honest entries, before `tamper` ran.
    var entries: [TOCEntry]
}

/// Builds a stargz blob by hand: for each file a gzip member with its tar header, then a gzip member with its
/// payload (+ tar padding); then the TOC member (tar with `stargz.index.json` + end-of-archive) and a footer.
/// `tamper` edits the honest TOC entries before they are written; `tocTar` replaces the whole TOC tar.
func craftBlob(
    _ files: [(name: String, contents: [UInt8])], legacy: Bool = false,
    tamper: (inout [TOCEntry]) -> Void = { _ in }, tocTar: [UInt8]? = nil
) throws -> CraftedBlob {
    var blob: [UInt8] = []
    var entries: [TOCEntry] = []
    for (name, contents) in files {
        var w = TarWriter()
        try w.write(TarHeader(name: name, type: .regular), contents: contents)
        blob += try gzip(data: Array(w.bytes[0..<512]))
        var e = TOCEntry(name: name, type: "reg")
        e.size = Int64(contents.count)
        e.mode = 0o644
        if !contents.isEmpty {
            e.offset = Int64(blob.count)
            e.digest = Digest.sha256(of: contents).description
            e.chunkDigest = e.digest
            blob += try gzip(data: Array(w.bytes[512...]))
        }
        entries.append(e)
    }
    let honest = entries
    tamper(&entries)
    let json = TOC(entries: entries).jsonBytes()
    let tar: [UInt8]
    if let tocTar {
        tar = tocTar
    } else {
        var w = TarWriter()
        try w.write(TarHeader(name: estargzTOCName, type: .regular), contents: json)
        try w.finish()
        tar = w.bytes
    }
    let tocOffset = Int64(blob.count)
    blob += try gzip(data: tar)
    blob += legacy ? craftedLegacyFooter(hex16(tocOffset)) : craftedEStargzFooter(hex16(tocOffset))
    return CraftedBlob(blob: blob, tocOffset: tocOffset, tocJSON: json, entries: honest)
}

let craftedFiles: [(name: String, contents: [UInt8])] = [
    ("etc/hosts", Array("127.0.0.1 localhost\n".utf8)),
    ("bin/tool", [UInt8](repeating: 0x42, count: 3000)),
    ("etc/empty", []),
]

/// The EStargzError `body` throws (nil, and a recorded issue, if it throws nothing or something else).
func thrownEStargzError(
    sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) -> EStargzError? {
    do {
        try body()
        Issue.record("expected an EStargzError, nothing was thrown", sourceLocation: sourceLocation)
    } catch let e as EStargzError {
        return e
    } catch {
        Issue.record("expected an EStargzError, got \(type(of: error)): \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// Opens `blob` with the test layer name and returns the error (checked to name the layer).
func openError(
    _ blob: [UInt8], maxTOCSize: Int = EStargzReader.defaultMaxTOCSize, sourceLocation: SourceLocation = #_sourceLocation
) -> EStargzError? {
    let e = thrownEStargzError(sourceLocation: sourceLocation) {
        _ = try EStargzReader(blob: blob, layer: badLayer, maxTOCSize: maxTOCSize)
    }
    if let e { expectNamesLayer(e, sourceLocation: sourceLocation) }
    return e
}

func expectNamesLayer(_ e: EStargzError, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(e.layerName == badLayer, "error not wrapped with the layer: \(e)", sourceLocation: sourceLocation)
    #expect(e.description.hasPrefix("layer \(badLayer): "), "\(e.description)", sourceLocation: sourceLocation)
}

/// The detail of an `.invalidFooter` (nil, and a recorded issue, for any other case).
func footerDetail(_ e: EStargzError?, sourceLocation: SourceLocation = #_sourceLocation) -> String? {
    guard case .invalidFooter(let d)? = e?.underlying else {
        Issue.record("expected invalidFooter, got \(String(describing: e))", sourceLocation: sourceLocation)
        return nil
    }
    return d
}

/// The detail of an `.invalidTOC` (nil, and a recorded issue, for any other case).
func tocDetail(_ e: EStargzError?, sourceLocation: SourceLocation = #_sourceLocation) -> String? {
    guard case .invalidTOC(let d)? = e?.underlying else {
        Issue.record("expected invalidTOC, got \(String(describing: e))", sourceLocation: sourceLocation)
        return nil
    }
    return d
}

/// Deterministic pseudo-random bytes.
func pseudoRandomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var x = seed | 1
    return (0..<count).map { _ in
        x ^= x << 13
        x ^= x >> 7
        x ^= x << 17
        return UInt8(truncatingIfNeeded: x >> 24)
    }
}

// MARK: - Tests

@Suite(.tags(.unit)) struct EStargzBadInputTests {
    let chunk = 64 << 10

    @Test func legacyStargzFooterIsRead() throws {
        let (tar, input) = try makeInputTar(chunk: chunk)
        let (blob, result) = try convert(tar, chunk: chunk)
        #expect(try EStargzReader(blob: blob).footerKind == .estargz)

        var legacy = Array(blob.dropLast(estargzFooterSize))
        legacy += craftedLegacyFooter(hex16(result.tocOffset))
        #expect(try parseLegacyStargzFooter(Array(legacy.suffix(legacyStargzFooterSize))) == result.tocOffset)
        #expect(throws: EStargzError.self) { try parseEStargzFooter(Array(legacy.suffix(estargzFooterSize))) }

        let reader = try EStargzReader(blob: legacy, layer: badLayer)
        #expect(reader.footerKind == .legacy)
        #expect(reader.isLegacy)
        #expect(reader.layer == badLayer)
        #expect(reader.tocOffset == result.tocOffset)
        try reader.verifyTOC(result.tocDigest)
        #expect(reader.toc == result.toc)
        var chunks = 0
        for (h, c) in input where h.type == .regular && !c.isEmpty {
            var rebuilt: [UInt8] = []
            while rebuilt.count < c.count {
                let ch = try #require(reader.chunk(for: h.name, at: Int64(rebuilt.count)))
                rebuilt += try reader.readChunk(ch)
                chunks += 1
            }
            #expect(rebuilt == c, "contents of \(h.name)")
        }
        #expect(chunks == 8)
        // The landmark too: every chunk in the blob reads and verifies.
        for ch in reader.allChunks { _ = try reader.readChunk(ch) }

        // A hand-made legacy blob as well.
        let crafted = try craftBlob(craftedFiles, legacy: true)
        let r2 = try EStargzReader(blob: crafted.blob)
        #expect(r2.isLegacy)
        #expect(try r2.readChunk(#require(r2.chunk(for: "bin/tool", at: 0))) == craftedFiles[1].contents)
    }

    @Test func truncatedBlob() throws {
        let (tar, input) = try makeInputTar(chunk: chunk)
        let (blob, result) = try convert(tar, chunk: chunk)
        let full = Int64(blob.count)
        let reader = try EStargzReader(blob: blob)
        let big = try #require(reader.chunk(for: "usr/big.bin", at: Int64(chunk)))
        let cuts: [(what: String, at: Int)] = [
            ("inside the footer", blob.count - 20),
            ("inside the TOC", Int(result.tocOffset) + 10),
            ("inside the payload", Int(big.offset) + 100),
        ]
        for (what, cut) in cuts {
            let short = Array(blob.prefix(cut))
            // The blob is what is left: no footer at its end.
            let d = footerDetail(openError(short))
            #expect(d?.contains("no eStargz footer") == true, "\(what): \(d ?? "")")
            #expect(d?.contains("truncated") == true, "\(what): \(d ?? "")")

            // The descriptor still says the full size: the footer read comes back short.
            let e = thrownEStargzError {
                _ = try EStargzReader(blobSize: full, layer: badLayer) { offset, count in
                    let lo = min(Int(offset), short.count)
                    return Array(short[lo..<min(short.count, lo + count)])
                }
            }
            if let e { expectNamesLayer(e) }
            let got = max(0, cut - (blob.count - estargzFooterSize))
            #expect(e?.underlying == .truncated(offset: full - 51, expected: 51, got: got), "\(what)")
            #expect(e?.description.contains("truncated") == true)
        }

        // Tail fetched first (as a lazy pull does), payload cut short afterwards: open works, chunk reads past
        // the cut fail with `truncated`, chunks before it still read.
        let cut = cuts[2].at
        let lazy = try EStargzReader(blobSize: full, layer: badLayer) { offset, count in
            if offset >= result.tocOffset { return Array(blob[Int(offset)..<(Int(offset) + count)]) }
            let lo = min(Int(offset), cut)
            return Array(blob[lo..<min(cut, lo + count)])
        }
        let hosts = try #require(lazy.chunk(for: "etc/hosts", at: 0))
        #expect(try lazy.readChunk(hosts) == input[1].1)
        let chunkAtCut = try #require(lazy.chunk(for: "usr/big.bin", at: Int64(chunk)))
        let e = thrownEStargzError { _ = try lazy.readChunk(chunkAtCut) }
        if let e { expectNamesLayer(e) }
        #expect(
            e?.underlying
                == .truncated(
                    offset: chunkAtCut.offset, expected: Int(chunkAtCut.nextOffset - chunkAtCut.offset),
                    got: cut - Int(chunkAtCut.offset)))
        let after = try #require(lazy.chunk(for: "usr/big.bin", at: Int64(3 * chunk)))
        let e2 = thrownEStargzError { _ = try lazy.readChunk(after) }
        guard case .truncated(let o, _, 0)? = e2?.underlying else {
            Issue.record("expected truncated with 0 bytes, got \(String(describing: e2))")
            return
        }
        #expect(o == after.offset)
    }

    @Test func footerWithWrongMagic() throws {
        let crafted = try craftBlob(craftedFiles)
        var blob = crafted.blob
        blob[blob.count - 51 + 37] = UInt8(ascii: "X")  // STARGX
        let d = footerDetail(openError(blob))
        #expect(d?.contains("wrong magic") == true, "\(d ?? "")")
        #expect(d?.contains("no legacy stargz footer") == true, "\(d ?? "")")

        // Same for the legacy footer.
        var legacy = try craftBlob(craftedFiles, legacy: true).blob
        legacy[legacy.count - 47 + 33] = UInt8(ascii: "X")
        let d2 = footerDetail(openError(legacy))
        #expect(d2?.contains("wrong magic") == true, "\(d2 ?? "")")
    }

    @Test func footerTOCOffsetPastTheEnd() throws {
        let crafted = try craftBlob(craftedFiles)
        let payload = Array(crafted.blob.dropLast(estargzFooterSize))
        for offset in [Int64(payload.count), Int64(payload.count) + 1000, Int64.max] {
            let d = footerDetail(openError(payload + craftedEStargzFooter(hex16(offset))))
            #expect(d?.contains("TOC offset \(offset) is past the end") == true, "\(d ?? "")")
        }
        let legacyPayload = try Array(craftBlob(craftedFiles, legacy: true).blob.dropLast(legacyStargzFooterSize))
        let d = footerDetail(openError(legacyPayload + craftedLegacyFooter(hex16(Int64(legacyPayload.count)))))
        #expect(d?.contains("past the end") == true, "\(d ?? "")")
    }

    @Test func footerTOCOffsetFieldNotHex() throws {
        let payload = try Array(craftBlob(craftedFiles).blob.dropLast(estargzFooterSize))
        for field in ["-000000000000001", "+000000000000010", "00000000000000zz", " 00000000000001f"] {
            let d = footerDetail(openError(payload + craftedEStargzFooter(field)))
            #expect(d?.contains("is not 16 hex digits") == true, "\(field): \(d ?? "")")
        }
        let d = footerDetail(openError(payload + craftedEStargzFooter("ffffffffffffffff")))
        #expect(d?.contains("does not fit a signed 64-bit offset") == true, "\(d ?? "")")
    }

    @Test func tocDigestNotMatchingTheAnnotation() throws {
        let crafted = try craftBlob(craftedFiles)
        let reader = try EStargzReader(blob: crafted.blob, layer: badLayer)
        try reader.verifyTOC(Digest.sha256(of: crafted.tocJSON))
        let annotation = Digest.sha256(of: Array("another TOC".utf8))
        let e = thrownEStargzError { try reader.verifyTOC(annotation) }
        if let e { expectNamesLayer(e) }
        #expect(
            e?.underlying
                == .tocDigestMismatch(
                    expected: annotation.description, actual: Digest.sha256(of: crafted.tocJSON).description))
        #expect(e?.description.contains(annotation.description) == true)
    }

    @Test func twoEntriesWithTheSameOffset() throws {
        let blob = try craftBlob(craftedFiles) { $0[1].offset = $0[0].offset }.blob
        let off = try craftBlob(craftedFiles).entries[0].offset
        let d = tocDetail(openError(blob))
        #expect(d == "offset \(off) found twice (\"etc/hosts\" and \"bin/tool\")")
    }

    @Test func chunkNotMatchingItsDigest() throws {
        // The TOC claims another digest for bin/tool.
        let evil = Digest.sha256(of: Array("evil".utf8)).description
        let crafted = try craftBlob(craftedFiles) { $0[1].chunkDigest = evil }
        let reader = try EStargzReader(blob: crafted.blob, layer: badLayer)
        let ch = try #require(reader.chunk(for: "bin/tool", at: 0))
        let e = thrownEStargzError { _ = try reader.readChunk(ch) }
        if let e { expectNamesLayer(e) }
        #expect(
            e?.underlying
                == .chunkDigestMismatch(
                    name: "bin/tool", offset: ch.offset, expected: evil,
                    actual: Digest.sha256(of: craftedFiles[1].contents).description))

        let honest = try craftBlob(craftedFiles)
        let toolOffset = Int(honest.entries[1].offset)
        // The TOC keeps the honest digest, the payload member holds other bytes.
        let swapped = try craftBlob([("etc/hosts", craftedFiles[0].contents), ("bin/tool", [UInt8](repeating: 0x43, count: 3000))]) {
            $0[1].chunkDigest = Digest.sha256(of: craftedFiles[1].contents).description
        }
        let r2 = try EStargzReader(blob: swapped.blob, layer: badLayer)
        let e2 = thrownEStargzError { _ = try r2.readChunk(#require(r2.chunk(for: "bin/tool", at: 0))) }
        guard case .chunkDigestMismatch(let name, _, let expected, _)? = e2?.underlying else {
            Issue.record("expected chunkDigestMismatch, got \(String(describing: e2))")
            return
        }
        #expect(name == "bin/tool" && expected == Digest.sha256(of: craftedFiles[1].contents).description)
        #expect(e2?.description.contains(badLayer) == true)

        // Corrupt compressed bytes: the gzip CRC or inflate fails first.
        var corrupt = honest.blob
        corrupt[toolOffset + 12] ^= 0xff
        let r3 = try EStargzReader(blob: corrupt, layer: badLayer)
        let e3 = thrownEStargzError { _ = try r3.readChunk(#require(r3.chunk(for: "bin/tool", at: 0))) }
        if let e3 { expectNamesLayer(e3) }
        switch e3?.underlying {
        case .corruptGzip(let d)?: #expect(d.contains("chunk of bin/tool"))
        case .chunkDigestMismatch?: break
        default: Issue.record("expected corruptGzip or chunkDigestMismatch, got \(String(describing: e3))")
        }
    }

    @Test func tocNamingAPathWithDotDot() throws {
        for hostile in ["../../etc/passwd", "usr/../../etc/shadow", "/..", "a/b/..", "a\u{0}b"] {
            let blob = try craftBlob(craftedFiles) { $0[0].name = hostile }.blob
            let e = openError(blob)
            #expect(e?.underlying == .unsafeEntryName(entry: hostile, path: hostile), "\(hostile)")
            #expect(e?.description.contains("unsafe eStargz TOC entry") == true)
        }
        // Also on an entry without payload, and as a hard link target.
        let dirBlob = try craftBlob(craftedFiles) { $0.append(TOCEntry(name: "x/../../y/", type: "dir")) }.blob
        #expect(openError(dirBlob)?.underlying == .unsafeEntryName(entry: "x/../../y/", path: "x/../../y/"))
        let linkBlob = try craftBlob(craftedFiles) {
            var link = TOCEntry(name: "etc/link", type: "hardlink")
            link.linkName = "../etc/hosts"
            $0.append(link)
        }.blob
        let e = openError(linkBlob)
        #expect(e?.underlying == .unsafeEntryName(entry: "etc/link", path: "../etc/hosts"))
        #expect(e?.description.contains("hard link target \"../etc/hosts\"") == true)

        // `.`, `//` and a leading `/` are normalised as the reference does, not refused.
        let fine = try craftBlob(craftedFiles) {
            $0[0].name = "/./etc//hosts"
            $0[1].name = "./bin/tool"
        }
        let reader = try EStargzReader(blob: fine.blob)
        #expect(try reader.readChunk(#require(reader.chunk(for: "etc/hosts", at: 0))) == craftedFiles[0].contents)
        #expect(reader.chunk(for: "bin/tool", at: 0) != nil)
    }

    @Test func blobThatIsNotGzip() throws {
        // A plain tar.
        let (tar, _) = try makeInputTar(chunk: chunk)
        let d = footerDetail(openError(tar))
        #expect(d?.contains("not a gzip header") == true, "\(d ?? "")")

        // A plain tar with a valid footer: the TOC member is not gzip.
        let e = openError(tar + craftedEStargzFooter(hex16(1024)))
        guard case .corruptGzip(let g)? = e?.underlying else {
            Issue.record("expected corruptGzip, got \(String(describing: e))")
            return
        }
        #expect(g.contains("TOC member at offset 1024"), "\(g)")

        // gzip, but the TOC member is not a tar holding stargz.index.json first.
        var w = TarWriter()
        try w.write(TarHeader(name: "other.json", type: .regular), contents: Array("{}".utf8))
        try w.finish()
        let wrongName = try craftBlob(craftedFiles, tocTar: w.bytes).blob
        #expect(tocDetail(openError(wrongName))?.contains("not stargz.index.json") == true)
        let notTar = try craftBlob(craftedFiles, tocTar: Array("this is not a tar".utf8)).blob
        #expect(tocDetail(openError(notTar))?.contains("tar of the TOC member") == true)
        var j = TarWriter()
        try j.write(TarHeader(name: estargzTOCName, type: .regular), contents: Array("{\"version\": 1, \"entries\": [".utf8))
        try j.finish()
        let badJSON = try craftBlob(craftedFiles, tocTar: j.bytes).blob
        #expect(tocDetail(openError(badJSON))?.contains("is not valid TOC JSON") == true)
    }

    @Test func randomGarbage() throws {
        for (i, size) in [0, 1, 46, 47, 50, 51, 52, 100, 4096, 1 << 20].enumerated() {
            let garbage = pseudoRandomBytes(size, seed: UInt64(i + 1) &* 0x9E37_79B9_7F4A_7C15)
            let d = footerDetail(openError(garbage))
            if size < 47 {
                #expect(d?.contains("smaller than any footer") == true, "\(size): \(d ?? "")")
            } else {
                #expect(d?.contains("no eStargz footer") == true, "\(size): \(d ?? "")")
            }
        }
        // Garbage with a valid footer in front of it.
        let garbage = pseudoRandomBytes(10_000, seed: 42)
        let e = openError(garbage + craftedEStargzFooter(hex16(100)))
        guard case .corruptGzip? = e?.underlying else {
            Issue.record("expected corruptGzip, got \(String(describing: e))")
            return
        }
        // Random bytes over the TOC member of a real blob: always an EStargzError naming the layer, never a trap.
        let crafted = try craftBlob(craftedFiles)
        for seed in 1...50 {
            var blob = crafted.blob
            let noise = pseudoRandomBytes(8, seed: UInt64(seed))
            let at = Int(crafted.tocOffset) + 10 + seed % (blob.count - Int(crafted.tocOffset) - 51 - 18)
            blob.replaceSubrange(at..<(at + 8), with: noise)
            _ = openError(blob)
        }
    }

    @Test func tocTooLarge() throws {
        // A gzip bomb in place of the TOC: 1 MiB of zeros inflates past a 64 KiB limit.
        let bomb = try craftBlob(craftedFiles, tocTar: [UInt8](repeating: 0, count: 1 << 20)).blob
        let e = openError(bomb, maxTOCSize: 64 << 10)
        guard case .tocTooLarge(let limit, let d)? = e?.underlying else {
            Issue.record("expected tocTooLarge, got \(String(describing: e))")
            return
        }
        #expect(limit == 64 << 10)
        #expect(d.contains("inflates to more than"), "\(d)")
        // Too large already compressed: refused before the read.
        let crafted = try craftBlob(craftedFiles)
        var padded = Array(crafted.blob.dropLast(estargzFooterSize))
        padded += [UInt8](repeating: 0, count: 200 << 10)
        padded += craftedEStargzFooter(hex16(crafted.tocOffset))
        let e2 = openError(padded, maxTOCSize: 64 << 10)
        guard case .tocTooLarge(_, let d2)? = e2?.underlying else {
            Issue.record("expected tocTooLarge, got \(String(describing: e2))")
            return
        }
        #expect(d2.contains("bytes compressed"), "\(d2)")
        // The default limit is far above a normal TOC.
        _ = try EStargzReader(blob: crafted.blob)
    }

    @Test func negativeOrOutOfRangeOffsetsAndSizes() throws {
        let crafted = try craftBlob(craftedFiles)
        let toc = crafted.tocOffset
        let cases: [(String, (inout [TOCEntry]) -> Void, String)] = [
            ("negative offset", { $0[1].offset = -5 }, "\"bin/tool\": offset -5 is outside the payload area 1..<\(toc)"),
            ("offset 0", { $0[1].offset = 0 }, "\"bin/tool\": offset 0 is outside the payload area"),
            ("offset in the TOC", { $0[1].offset = toc }, "\"bin/tool\": offset \(toc) is outside the payload area"),
            ("offset past the blob", { $0[1].offset = Int64.max }, "is outside the payload area"),
            ("negative size", { $0[1].size = -1 }, "\"bin/tool\": negative size -1"),
            ("negative innerOffset", { $0[1].innerOffset = -1 }, "\"bin/tool\": negative innerOffset -1"),
            ("negative chunkOffset", { $0[1].chunkOffset = -1 }, "\"bin/tool\": chunkOffset -1, chunkSize 0 outside a file of 3000 bytes"),
            ("negative chunkSize", { $0[1].chunkSize = -10 }, "chunkSize -10 outside a file"),
            ("chunkOffset past the file", { $0[1].chunkOffset = 3000 }, "chunkOffset 3000, chunkSize 0 outside a file"),
            ("chunk past the file", { $0[1].chunkSize = 3001 }, "\"bin/tool\": chunk 0+3001 (innerOffset 0) outside a file of 3000 bytes"),
            ("chunkOffset + chunkSize overflows", { $0[1].chunkOffset = 1; $0[1].chunkSize = Int64.max }, "chunk 1+\(Int64.max)"),
            ("chunk of an unknown file", { $0[1].type = "chunk"; $0[1].name = "nowhere" }, "chunk of \"nowhere\", which has no earlier reg entry"),
        ]
        for (what, tamper, message) in cases {
            let blob = try craftBlob(craftedFiles, tamper: tamper).blob
            let d = tocDetail(openError(blob))
            #expect(d?.contains(message) == true, "\(what): \(d ?? "nil")")
        }
    }

    @Test func innerOffsetOverflowAndForeignMember() throws {
        // innerOffset + chunkSize overflows.
        let files: [(name: String, contents: [UInt8])] = [("a", [1, 2, 3]), ("b", [4, 5, 6])]
        let overflow = try craftBlob(files) {
            $0[1].offset = $0[0].offset
            $0[1].innerOffset = Int64.max - 1
        }.blob
        #expect(tocDetail(openError(overflow))?.contains("\"b\": chunk 0+3 (innerOffset \(Int64.max - 1)) outside") == true)
        // innerOffset into a member the previous payload entry did not start.
        let foreign = try craftBlob(files) { $0[1].innerOffset = 512 }.blob
        #expect(tocDetail(openError(foreign))?.contains("that the entry before it does not start") == true)
        // A legitimate shared member (min-chunk-size layout) is accepted and gets the right compressed range.
        var w = TarWriter()
        try w.write(TarHeader(name: "a", type: .regular), contents: [1, 2, 3])
        let aHeader = Array(w.bytes[0..<512]), aBody = Array(w.bytes[512...])
        var w2 = TarWriter()
        try w2.write(TarHeader(name: "b", type: .regular), contents: [4, 5, 6])
        var blob = try gzip(data: aHeader)
        let member = Int64(blob.count)
        blob += try gzip(data: aBody + w2.bytes)
        var a = TOCEntry(name: "a", type: "reg")
        a.size = 3
        a.offset = member
        a.chunkDigest = Digest.sha256(of: [1, 2, 3]).description
        var b = TOCEntry(name: "b", type: "reg")
        b.size = 3
        b.offset = member
        b.innerOffset = 1024
        b.chunkDigest = Digest.sha256(of: [4, 5, 6]).description
        var t = TarWriter()
        try t.write(TarHeader(name: estargzTOCName, type: .regular), contents: TOC(entries: [a, b]).jsonBytes())
        try t.finish()
        let tocOffset = Int64(blob.count)
        blob += try gzip(data: t.bytes) + craftedEStargzFooter(hex16(tocOffset))
        let reader = try EStargzReader(blob: blob)
        let cb = try #require(reader.chunk(for: "b", at: 0))
        #expect(cb.offset == member && cb.nextOffset == tocOffset)
        #expect(try reader.readChunk(cb) == [4, 5, 6])
        #expect(try reader.readChunk(#require(reader.chunk(for: "a", at: 0))) == [1, 2, 3])
    }

    @Test func payloadEntriesOutOfBlobOrder() throws {
        // Offsets swapped: the later entry's member would end before it starts (nextOffset <= offset).
        let crafted = try craftBlob(craftedFiles)
        let (first, second) = (crafted.entries[0].offset, crafted.entries[1].offset)
        let blob = try craftBlob(craftedFiles) {
            $0[0].offset = second
            $0[1].offset = first
        }.blob
        let d = tocDetail(openError(blob))
        #expect(
            d == "\"etc/hosts\": gzip member at offset \(second) would end at \(first) (nextOffset <= offset); "
                + "payload entries are not in blob order")
    }

    @Test func handMadeChunkWithBadRangeDoesNotTrap() throws {
        let crafted = try craftBlob(craftedFiles)
        let reader = try EStargzReader(blob: crafted.blob, layer: badLayer)
        let good = try #require(reader.chunk(for: "bin/tool", at: 0))
        var bad: [EStargzChunk] = []
        var c = good
        c.nextOffset = c.offset
        bad.append(c)
        c = good
        c.nextOffset = crafted.tocOffset + 1
        bad.append(c)
        c = good
        c.offset = -1
        bad.append(c)
        c = good
        c.innerOffset = -1
        bad.append(c)
        c = good
        c.chunkSize = Int64.max
        c.innerOffset = 10
        bad.append(c)
        c = good
        c.chunkSize = 0
        bad.append(c)
        for chunk in bad {
            let e = thrownEStargzError { _ = try reader.readChunk(chunk) }
            if let e { expectNamesLayer(e) }
            #expect(tocDetail(e) != nil, "\(chunk)")
        }
        #expect(try reader.readChunk(good) == craftedFiles[1].contents)
    }

    @Test func chunkLargerThanTheCapIsRefusedWhenOpening() throws {
        // A file announced one byte over the cap, in one chunk: every fetch would have to hold it whole.
        let over = EStargzReader.maxChunkSize + 1
        let blob = try craftBlob(craftedFiles) { $0[1].size = over }.blob
        #expect(tocDetail(openError(blob))?.contains("chunkSize \(over) is not within 1...\(EStargzReader.maxChunkSize) bytes") == true)
        // Also when the chunk is a later one, and through innerOffset (a member shared with earlier chunks).
        let later = try craftBlob(craftedFiles) {
            $0[1].size = over + 100
            $0[1].chunkSize = 100
            $0.insert(laterChunk(of: $0[1], innerOffset: 100, chunkOffset: 100), at: 2)
        }.blob
        #expect(tocDetail(openError(later))?.contains("innerOffset 100 + chunkSize \(over) is not within") == true)
    }

    @Test func chunkWhoseCompressedRangeIsAboveTheCapIsRefusedWhenOpening() throws {
        // Padding between the last payload member and the TOC: the last chunk's range runs to the TOC offset.
        let crafted = try craftBlob(craftedFiles)
        var tar = TarWriter()
        try tar.write(TarHeader(name: estargzTOCName, type: .regular), contents: crafted.tocJSON)
        try tar.finish()
        var blob = Array(crafted.blob[..<Int(crafted.tocOffset)])
        blob += [UInt8](repeating: 0, count: Int(EStargzReader.maxChunkCompressedSpan))
        let tocOffset = Int64(blob.count)
        blob += try gzip(data: tar.bytes) + craftedEStargzFooter(hex16(tocOffset))
        let d = tocDetail(openError(blob))
        #expect(d?.contains("chunk of bin/tool at offset \(crafted.entries[1].offset):") == true, "\(d ?? "nil")")
        #expect(d?.contains("above the \(EStargzReader.maxChunkCompressedSpan)-byte limit of one chunk's compressed range") == true)
    }

    @Test func fileSizesMustBeCoveredByTheirChunks() throws {
        // An exabyte file behind one 3000-byte chunk: sizes would add up past Int64.max in statfs.
        let huge = try craftBlob(craftedFiles) {
            $0[1].size = Int64.max - 1
            $0[1].chunkSize = 3000
        }.blob
        #expect(tocDetail(openError(huge)) == "\"bin/tool\": its chunks cover 3000 of its \(Int64.max - 1) bytes")
        // A gap between chunks.
        let gap = try craftBlob(craftedFiles) {
            $0[1].chunkSize = 1000
            $0.insert(laterChunk(of: $0[1], innerOffset: 1000, chunkOffset: 2000), at: 2)
        }.blob
        #expect(tocDetail(openError(gap))?.contains("\"bin/tool\": chunk at 2000 does not continue the file's chunks, which end at 1000") == true)
        // Offsets of entries without payload stay inside the blob too (the prefetch landmark's bounds the prefetch).
        let landmark = try craftBlob(craftedFiles) {
            var mark = TOCEntry(name: prefetchLandmarkName, type: "reg")
            mark.offset = Int64.max
            $0.append(mark)
        }.blob
        #expect(tocDetail(openError(landmark))?.contains("offset \(Int64.max) is outside the blob") == true)
    }

    @Test func footerTOCSpanAboveTheCapIsRefusedBeforeItIsRead() throws {
        // The footer points at a TOC 65 MiB before it: refused from the footer alone, nothing else is read.
        let crafted = try craftBlob(craftedFiles)
        var blob = Array(crafted.blob.dropLast(estargzFooterSize))
        blob += [UInt8](repeating: 0, count: Int(EStargzReader.maxCompressedTOCSize))
        blob += craftedEStargzFooter(hex16(crafted.tocOffset))
        var largestRead = 0
        let e = thrownEStargzError {
            _ = try EStargzReader(blobSize: Int64(blob.count), layer: badLayer) { offset, count in
                largestRead = max(largestRead, count)
                return Array(blob[Int(offset)..<(Int(offset) + count)])
            }
        }
        guard case .tocTooLarge(_, let d)? = e?.underlying else {
            Issue.record("expected tocTooLarge, got \(String(describing: e))")
            return
        }
        #expect(d.contains("above the \(EStargzReader.maxCompressedTOCSize)-byte limit"), "\(d)")
        #expect(largestRead == estargzFooterSize)
        // The same check callers make before they fetch the TOC themselves.
        #expect(throws: EStargzError.self) {
            _ = try EStargzReader.locateTOC(blobSize: Int64(blob.count), footerTail: Array(blob.suffix(estargzFooterSize)))
        }
        let honest = try EStargzReader.locateTOC(blobSize: Int64(crafted.blob.count), footerTail: Array(crafted.blob.suffix(estargzFooterSize)))
        #expect(honest.tocOffset == crafted.tocOffset && honest.footerKind == .estargz)
    }

    @Test func errorsWithoutALayerNameAreNotWrapped() throws {
        let e = thrownEStargzError { _ = try EStargzReader(blob: [1, 2, 3]) }
        #expect(e?.layerName == nil)
        guard case .invalidFooter? = e else {
            Issue.record("expected a bare invalidFooter, got \(String(describing: e))")
            return
        }
        #expect(e?.description.hasPrefix("invalid eStargz footer: ") == true)
        // Wrapping is idempotent.
        let once = EStargzError.notFound("x").inLayer("L")
        #expect(once.inLayer("M") == once)
        #expect(once.underlying == .notFound("x"))
        #expect(once.description == "layer L: eStargz: x not found")
    }
}

/// A further chunk of `file` in the same gzip member (same offset and digest), at these offsets.
private func laterChunk(of file: TOCEntry, innerOffset: Int64, chunkOffset: Int64) -> TOCEntry {
    var chunk = TOCEntry(name: file.name, type: "chunk")
    chunk.offset = file.offset
    chunk.innerOffset = innerOffset
    chunk.chunkOffset = chunkOffset
    chunk.chunkDigest = file.chunkDigest
    return chunk
}
