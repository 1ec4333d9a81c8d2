import Archive
import Crypto
import Foundation
import OCI

/// A payload chunk of a regular file, with the compressed byte range to fetch for it.
public struct EStargzChunk: Sendable, Equatable {
    /// Normalised file name.
    public var name: String
    /// Offset of this chunk inside the uncompressed file.
    public var chunkOffset: Int64
    /// Uncompressed size of this chunk (filled in for the last chunk).
    public var chunkSize: Int64
    /// Compressed offset of the gzip member holding the chunk.
    public var offset: Int64
    /// End of the compressed range: the next payload member's offset, or the TOC offset for the last one.
    public var nextOffset: Int64
    /// Uncompressed offset of the chunk inside the member at `offset`.
    public var innerOffset: Int64
    public var chunkDigest: String

    public var compressedRange: Range<Int64> { offset..<nextOffset }
}

/// Reads an eStargz blob through random access (a tail fetch plus ranges): footer, TOC, chunks.
public final class EStargzReader {
    public let blobSize: Int64
    public let tocOffset: Int64
    public let toc: TOC
    /// sha256 of the TOC JSON bytes as stored.
    public let tocDigest: OCI.Digest
    /// The TOC JSON bytes as stored.
    public let tocJSON: [UInt8]
    /// Chunks of each normalised file name, in file order.
    public let chunksByName: [String: [EStargzChunk]]
    /// Hard link name → normalised target name.
    public let hardLinks: [String: String]
    private let readAt: (Int64, Int) throws -> [UInt8]

    /// - Parameters:
    ///   - blobSize: size of the blob.
    ///   - readAt: returns exactly `count` bytes at `offset` of the blob.
    public init(blobSize: Int64, readAt: @escaping (_ offset: Int64, _ count: Int) throws -> [UInt8]) throws {
        guard blobSize >= Int64(estargzFooterSize) else {
            throw EStargzError.invalidFooter("blob of \(blobSize) bytes is smaller than the footer")
        }
        self.blobSize = blobSize
        self.readAt = readAt
        let footer = try readAt(blobSize - Int64(estargzFooterSize), estargzFooterSize)
        let tocOffset = try parseEStargzFooter(footer)
        guard tocOffset < blobSize - Int64(estargzFooterSize) else {
            throw EStargzError.invalidFooter("TOC offset \(tocOffset) is past the end of the blob (\(blobSize) bytes)")
        }
        self.tocOffset = tocOffset
        let tocCompressed = try readAt(tocOffset, Int(blobSize - Int64(estargzFooterSize) - tocOffset))
        let tar = try gunzip(tocCompressed, limit: Int.max)
        let tarReader = TarReader(bytes: tar)
        guard let h = try tarReader.next(), cleanEntryName(h.name) == estargzTOCName else {
            throw EStargzError.invalidTOC("the TOC member does not start with \(estargzTOCName)")
        }
        let json = try tarReader.readContents()
        tocDigest = OCI.Digest.sha256(of: json)
        tocJSON = json
        let toc: TOC
        do {
            toc = try JSONDecoder().decode(TOC.self, from: Data(json))
        } catch let e as EStargzError {
            throw e
        } catch {
            throw EStargzError.invalidTOC("JSON: \(error)")
        }
        guard toc.version == 1 else { throw EStargzError.invalidTOC("unsupported version \(toc.version)") }
        self.toc = toc

        // Chunks, with nextOffset and filled-in chunk sizes.
        var payload: [(index: Int, entry: TOCEntry)] = []
        var fileSize: [String: Int64] = [:]
        var links: [String: String] = [:]
        var seenOffsets: Set<Int64> = []
        for (i, e) in toc.entries.enumerated() {
            let name = cleanEntryName(e.name)
            if e.type == "reg" { fileSize[name] = e.size }
            if e.type == "hardlink" { links[name] = cleanEntryName(e.linkName) }
            guard (e.type == "reg" && e.size > 0) || e.type == "chunk" else { continue }
            if e.innerOffset == 0 {
                guard seenOffsets.insert(e.offset).inserted else {
                    throw EStargzError.invalidTOC("offset \(e.offset) found twice")
                }
            }
            guard e.offset > 0, e.offset < tocOffset else {
                throw EStargzError.invalidTOC("\(e.name): offset \(e.offset) outside the payload area")
            }
            payload.append((i, e))
        }
        var byName: [String: [EStargzChunk]] = [:]
        var next = tocOffset
        var chunks: [EStargzChunk] = []
        for (_, e) in payload.reversed() {
            let name = cleanEntryName(e.name)
            guard let size = fileSize[name] else { throw EStargzError.invalidTOC("chunk of unknown file \(e.name)") }
            let chunkSize = e.chunkSize != 0 ? e.chunkSize : size - e.chunkOffset
            guard chunkSize > 0, e.chunkOffset >= 0, e.chunkOffset + chunkSize <= size else {
                throw EStargzError.invalidTOC("\(e.name): chunk \(e.chunkOffset)+\(chunkSize) outside the file")
            }
            chunks.append(
                EStargzChunk(
                    name: name, chunkOffset: e.chunkOffset, chunkSize: chunkSize, offset: e.offset, nextOffset: next,
                    innerOffset: e.innerOffset, chunkDigest: e.chunkDigest))
            if e.innerOffset == 0 { next = e.offset }
        }
        for c in chunks.reversed() { byName[c.name, default: []].append(c) }
        chunksByName = byName
        hardLinks = links
    }

    /// Convenience: a reader over an in-memory blob.
    public convenience init(blob: [UInt8]) throws {
        try self.init(blobSize: Int64(blob.count)) { offset, count in
            guard offset >= 0, Int(offset) + count <= blob.count else {
                throw EStargzError.invalidFooter("read past the end of the blob")
            }
            return Array(blob[Int(offset)..<(Int(offset) + count)])
        }
    }

    /// Throws unless the TOC JSON digest equals `expected` (the `toc.digest` annotation).
    public func verifyTOC(_ expected: OCI.Digest) throws {
        guard tocDigest == expected else {
            throw EStargzError.tocDigestMismatch(expected: expected.description, actual: tocDigest.description)
        }
    }

    /// The chunk of `name` containing uncompressed file offset `offset`.
    public func chunk(for name: String, at offset: Int64) -> EStargzChunk? {
        var clean = cleanEntryName(name)
        var hops = 0
        while chunksByName[clean] == nil, let target = hardLinks[clean], hops < 32 {
            clean = target
            hops += 1
        }
        guard let list = chunksByName[clean] else { return nil }
        return list.first { offset >= $0.chunkOffset && offset < $0.chunkOffset + $0.chunkSize }
    }

    /// All payload chunks, in blob order.
    public var allChunks: [EStargzChunk] {
        chunksByName.values.flatMap { $0 }.sorted { $0.offset < $1.offset || ($0.offset == $1.offset && $0.innerOffset < $1.innerOffset) }
    }

    /// Fetches, decompresses and verifies one chunk.
    public func readChunk(_ chunk: EStargzChunk) throws -> [UInt8] {
        let compressed = try readAt(chunk.offset, Int(chunk.nextOffset - chunk.offset))
        let out = try EStargzReader.decompressChunk(chunk, compressed: compressed)
        try EStargzReader.verify(chunk, bytes: out)
        return out
    }

    /// Decompresses the chunk's bytes out of its compressed range.
    public static func decompressChunk(_ chunk: EStargzChunk, compressed: [UInt8]) throws -> [UInt8] {
        let need = Int(chunk.innerOffset + chunk.chunkSize)
        let data = try gunzip(compressed, limit: need)
        guard data.count >= need else {
            throw EStargzError.corruptGzip("chunk of \(chunk.name) at \(chunk.offset): \(data.count) of \(need) bytes")
        }
        return Array(data[Int(chunk.innerOffset)..<need])
    }

    /// Throws unless `bytes` match the chunk's `chunkDigest`.
    public static func verify(_ chunk: EStargzChunk, bytes: [UInt8]) throws {
        let actual = OCI.Digest.sha256(of: bytes).description
        guard !chunk.chunkDigest.isEmpty, actual == chunk.chunkDigest else {
            throw EStargzError.chunkDigestMismatch(
                name: chunk.name, offset: chunk.offset, expected: chunk.chunkDigest, actual: actual)
        }
    }
}

/// Parses the 51-byte eStargz footer; returns the TOC offset.
public func parseEStargzFooter(_ b: [UInt8]) throws -> Int64 {
    guard b.count == estargzFooterSize else { throw EStargzError.invalidFooter("size \(b.count), want 51") }
    guard b[0] == 0x1f, b[1] == 0x8b, b[2] == 8, b[3] & 4 != 0 else {
        throw EStargzError.invalidFooter("not a gzip header with an extra field")
    }
    guard b[10] == 26, b[11] == 0 else { throw EStargzError.invalidFooter("extra field length \(b[10])") }
    guard b[12] == UInt8(ascii: "S"), b[13] == UInt8(ascii: "G"), b[14] == 22, b[15] == 0 else {
        throw EStargzError.invalidFooter("missing SG subfield")
    }
    guard Array(b[32..<38]) == Array("STARGZ".utf8) else { throw EStargzError.invalidFooter("wrong magic") }
    guard let s = String(bytes: b[16..<32], encoding: .ascii), let off = Int64(s, radix: 16) else {
        throw EStargzError.invalidFooter("bad TOC offset")
    }
    return off
}
