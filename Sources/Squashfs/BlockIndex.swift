import Crypto
import Foundation
import ImageTree

#if canImport(Glibc)
import Glibc
#endif

/// sha256 of a file's bytes (or of a fragment block's members), as a hashable key.
public struct ContentKey: Hashable, Sendable {
    let words: (UInt64, UInt64, UInt64, UInt64)

    init(_ digest: some Sequence<UInt8>) {
        var bytes = Array(digest)
        if bytes.count < 32 { bytes += [UInt8](repeating: 0, count: 32 - bytes.count) }
        func word(_ at: Int) -> UInt64 { bytes[at..<at + 8].enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * $1.offset) } }
        words = (word(0), word(8), word(16), word(24))
    }

    var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(32)
        for word in [words.0, words.1, words.2, words.3] { out.appendLE(word) }
        return out
    }

    public static func == (a: ContentKey, b: ContentKey) -> Bool { a.words == b.words }
    public func hash(into hasher: inout Hasher) {
        hasher.combine(words.0)
        hasher.combine(words.1)
    }
}

/// Where a written squashfs keeps each file's compressed data blocks (by the file's content digest) and each
/// fragment block (by the digests of the tails packed in it), as absolute offsets in the file that holds it.
/// Kept beside a cached SIF, it lets the next image copy the blocks of every file it shares with this one
/// instead of compressing them again. Only valid for the same compressor, level and block size (`settings`).
public struct BlockIndex: Sendable {
    public struct FileRun: Sendable {
        public var start: UInt64
        /// Each block's size field as the inode stores it (raw flag included; 0 for a sparse block).
        public var sizes: [UInt32]

        var storedBytes: UInt64 { sizes.reduce(0) { $0 + UInt64($1 & ~SquashfsFormat.dataUncompressed) } }
    }

    public struct FragmentRun: Sendable {
        public var start: UInt64
        public var size: UInt32
    }

    public var settings: String
    public var files: [ContentKey: FileRun] = [:]
    public var fragments: [ContentKey: FragmentRun] = [:]
    /// Digests of files by their path in the store's layer cache, whose directories never change once
    /// extracted: the next image need not read an unchanged file to know it has its blocks already.
    public var sources: [String: ContentKey] = [:]

    public init(settings: String) { self.settings = settings }

    /// The end of the furthest run: the file holding them must be at least this long.
    var end: UInt64 {
        func end(_ start: UInt64, _ length: UInt64) -> UInt64 {
            let (sum, overflow) = start.addingReportingOverflow(length)
            return overflow ? .max : sum
        }
        let fileEnd = files.values.map { end($0.start, $0.storedBytes) }.max() ?? 0
        let fragmentEnd = fragments.values.map { end($0.start, UInt64($0.size & ~SquashfsFormat.dataUncompressed)) }.max() ?? 0
        return max(fileEnd, fragmentEnd)
    }

    private static let magic = Array("SLPWSQB2".utf8)
    private static let maxRuns = 1 << 24

    public func encoded() -> [UInt8] {
        var out = Self.magic
        let settingsBytes = Array(settings.utf8)
        out.appendLE(UInt32(settingsBytes.count))
        out += settingsBytes
        out.appendLE(UInt64(files.count))
        for (key, run) in files.sorted(by: { $0.value.start < $1.value.start }) {
            out += key.bytes
            out.appendLE(run.start)
            out.appendLE(UInt32(run.sizes.count))
            for size in run.sizes { out.appendLE(size) }
        }
        out.appendLE(UInt64(fragments.count))
        for (key, run) in fragments.sorted(by: { $0.value.start < $1.value.start }) {
            out += key.bytes
            out.appendLE(run.start)
            out.appendLE(run.size)
        }
        out.appendLE(UInt64(sources.count))
        for (path, key) in sources.sorted(by: { $0.key < $1.key }) {
            let bytes = Array(path.utf8)
            out.appendLE(UInt32(bytes.count))
            out += bytes
            out += key.bytes
        }
        out += SHA256.hash(data: out)
        return out
    }

    /// Decodes an index written by `encoded()`; nil for anything else (damaged, truncated, another version).
    public static func decode(_ bytes: [UInt8]) -> BlockIndex? {
        guard bytes.count >= magic.count + 32, Array(bytes[..<magic.count]) == magic else { return nil }
        let body = bytes[..<(bytes.count - 32)]
        guard Array(SHA256.hash(data: body)) == Array(bytes[(bytes.count - 32)...]) else { return nil }
        var reader = LittleEndianReader(bytes: Array(body), position: magic.count)
        guard let settingsLength = reader.u32(), let settingsBytes = reader.bytes(Int(settingsLength)) else { return nil }
        var index = BlockIndex(settings: String(decoding: settingsBytes, as: UTF8.self))
        guard let fileCount = reader.u64(), fileCount <= maxRuns else { return nil }
        for _ in 0..<fileCount {
            guard let key = reader.bytes(32), let start = reader.u64(), let count = reader.u32(), count <= maxRuns else { return nil }
            var sizes: [UInt32] = []
            sizes.reserveCapacity(Int(min(count, 1 << 16)))
            for _ in 0..<count {
                guard let size = reader.u32() else { return nil }
                sizes.append(size)
            }
            index.files[ContentKey(key)] = FileRun(start: start, sizes: sizes)
        }
        guard let fragmentCount = reader.u64(), fragmentCount <= maxRuns else { return nil }
        for _ in 0..<fragmentCount {
            guard let key = reader.bytes(32), let start = reader.u64(), let size = reader.u32() else { return nil }
            index.fragments[ContentKey(key)] = FragmentRun(start: start, size: size)
        }
        guard let sourceCount = reader.u64(), sourceCount <= maxRuns else { return nil }
        index.sources.reserveCapacity(Int(sourceCount))
        for _ in 0..<sourceCount {
            guard let length = reader.u32(), length <= 1 << 16, let path = reader.bytes(Int(length)), let key = reader.bytes(32) else { return nil }
            index.sources[String(decoding: path, as: UTF8.self)] = ContentKey(key)
        }
        guard reader.position == body.count, index.end <= UInt64(Int64.max) else { return nil }
        return index
    }
}

/// Earlier squashfs images whose blocks a new one may copy: each an open file and its block index.
public final class ReusableBlocks: @unchecked Sendable {
    struct Source {
        let path: String
        let descriptor: Int32
        let index: BlockIndex
    }

    let sources: [Source]

    /// Opens each file whose index was written with `settings` and which is as long as its index says; any
    /// other is skipped (a damaged or foreign cache entry costs compression time, never a wrong block).
    public init(candidates: [(file: String, index: BlockIndex)], settings: String) {
        var sources: [Source] = []
        for candidate in candidates where candidate.index.settings == settings {
            let descriptor = open(candidate.file, O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else { continue }
            var info = stat()
            guard fstat(descriptor, &info) == 0, UInt64(info.st_size) >= candidate.index.end else {
                close(descriptor)
                continue
            }
            sources.append(Source(path: candidate.file, descriptor: descriptor, index: candidate.index))
        }
        self.sources = sources
    }

    deinit { for source in sources { close(source.descriptor) } }

    /// File digests the indexes know by layer-cache path.
    var knownDigests: [String: ContentKey] {
        var known: [String: ContentKey] = [:]
        for source in sources { known.merge(source.index.sources) { first, _ in first } }
        return known
    }

    func file(_ key: ContentKey) -> (Source, BlockIndex.FileRun)? {
        for source in sources { if let run = source.index.files[key] { return (source, run) } }
        return nil
    }

    func fragment(_ key: ContentKey) -> (Source, BlockIndex.FragmentRun)? {
        for source in sources { if let run = source.index.fragments[key] { return (source, run) } }
        return nil
    }
}
