import Blocking
import Crypto
import ImageTree

/// Where one file's bytes went: its full blocks from `start`, its tail in a fragment.
struct FileLayout {
    var start: UInt64 = 0
    var blockSizes: [UInt32] = []
    var fragment = SquashfsFormat.noFragment
    var fragmentOffset: UInt32 = 0
    /// Bytes of all-zero blocks stored as holes.
    var sparseBytes: UInt64 = 0
}

/// How much of a squashfs was compressed here and how much was copied from earlier images.
public struct DataStatistics: Sendable, Codable, Equatable {
    /// Files read to learn their digest (the others' digests came from an earlier image's index).
    public var filesHashed = 0
    /// Distinct file contents (identical files are stored once).
    public var uniqueFiles = 0
    public var duplicateFiles = 0
    public var blocksCompressed = 0
    public var blocksReused = 0
    public var fragmentsCompressed = 0
    public var fragmentsReused = 0
    /// Uncompressed bytes that went through the compressor.
    public var bytesCompressed: UInt64 = 0
    /// On-disk bytes copied from earlier images.
    public var bytesReused: UInt64 = 0
}

/// The data part of a squashfs: every distinct file's full blocks, compressed on every core or copied from an
/// earlier image that has the same file, and the files' tails packed into fragment blocks.
///
/// Fragment blocks close at content-defined points (after a tail whose file digest starts with four zero bits)
/// as well as when full, so a changed or added file changes the fragment blocks around it and the rest stay the
/// same bytes, which the next image then copies.
final class DataWriter {
    private enum Emission {
        case blocks(file: Int, sizes: [UInt32], data: [[UInt8]], first: Bool, sparse: UInt64)
        case reusedFile(file: Int, source: ReusableBlocks.Source, run: BlockIndex.FileRun)
        case fragment(index: Int, size: UInt32, data: [UInt8], uncompressed: Int)
        case reusedFragment(index: Int, source: ReusableBlocks.Source, run: BlockIndex.FragmentRun)
    }

    private let blockSize: Int
    private let output: OutputFile
    private let reuse: ReusableBlocks?
    private let compression: OrderedWorkers<ZlibBlockCompressor, Emission>
    private(set) var layouts: [FileLayout] = []
    private(set) var fragments: [(start: UInt64, size: UInt32)] = []
    var statistics = DataStatistics()
    private(set) var index: BlockIndex
    private var fileKeys: [ContentKey] = []
    private var fragmentKeys: [ContentKey] = []

    // The fragment block being filled: where each tail in it comes from, and the digest and length of each (its
    // key). Tails are read only if the block must be compressed, not when an earlier image has it.
    private var fragmentTails: [(file: SourceFile, offset: Int64, length: Int)] = []
    private var fragmentLength = 0
    private var fragmentMembers: [UInt8] = []

    /// Blocks handed to a compression thread at once: 4 MiB of a large file.
    private static let blocksPerJob = 32

    init(blockSize: Int, level: Int, workers: Int, output: OutputFile, reuse: ReusableBlocks?, settings: String) throws(SquashfsError) {
        self.blockSize = blockSize
        self.output = output
        self.reuse = reuse
        self.index = BlockIndex(settings: settings)
        compression = try OrderedWorkers(workers: workers, name: "squashfs-deflate") { () throws(SquashfsError) in try ZlibBlockCompressor(level: level) }
    }

    func stop() { compression.stop() }

    /// Writes `files` (each a distinct inode, `digests` their contents' sha256) and returns, per file, the index
    /// of its layout: a file identical to an earlier one shares its layout.
    func write(_ files: [SourceFile], digests: [ContentKey]) throws(SquashfsError) -> [Int] {
        var layoutOf: [ContentKey: Int] = [:]
        var result: [Int] = []
        result.reserveCapacity(files.count)
        for (file, key) in zip(files, digests) {
            if let existing = layoutOf[key] {
                result.append(existing)
                statistics.duplicateFiles += 1
                continue
            }
            let layoutIndex = layouts.count
            layouts.append(FileLayout())
            fileKeys.append(key)
            layoutOf[key] = layoutIndex
            result.append(layoutIndex)
            statistics.uniqueFiles += 1
            try write(file, key: key, as: layoutIndex)
        }
        try closeFragment()
        try compression.finish(emit: emit)
        for (layout, key) in zip(layouts, fileKeys) where !layout.blockSizes.isEmpty {
            index.files[key] = BlockIndex.FileRun(start: UInt64(output.base) + layout.start, sizes: layout.blockSizes)
        }
        for (fragment, key) in zip(fragments, fragmentKeys) {
            index.fragments[key] = BlockIndex.FragmentRun(start: UInt64(output.base) + fragment.start, size: fragment.size)
        }
        return result
    }

    private func write(_ file: SourceFile, key: ContentKey, as layoutIndex: Int) throws(SquashfsError) {
        let fullBlocks = Int(file.size / Int64(blockSize))
        let tail = Int(file.size % Int64(blockSize))
        if fullBlocks > 0 {
            if let (source, run) = reuse?.file(key), run.sizes.count == fullBlocks {
                try compression.submit(ready: .reusedFile(file: layoutIndex, source: source, run: run), emit: emit)
            } else {
                let reader = try file.open()
                defer { reader.close() }
                var block = 0
                while block < fullBlocks {
                    let count = min(Self.blocksPerJob, fullBlocks - block)
                    let data = try reader.read(at: Int64(block) * Int64(blockSize), count: count * blockSize)
                    let first = block == 0
                    try compression.submit(
                        { [blockSize] compressor in Self.compress(data, blockSize: blockSize, file: layoutIndex, first: first, with: compressor) },
                        emit: emit)
                    block += count
                }
            }
        }
        if tail > 0 { try pack(tail: (file, Int64(fullBlocks) * Int64(blockSize), tail), key: key, into: layoutIndex) }
    }

    private static func compress(_ data: [UInt8], blockSize: Int, file: Int, first: Bool, with compressor: ZlibBlockCompressor) -> Emission {
        var sizes: [UInt32] = []
        var blocks: [[UInt8]] = []
        var sparse: UInt64 = 0
        data.withUnsafeBytes { all in
            var offset = 0
            while offset < all.count {
                let block = UnsafeRawBufferPointer(rebasing: all[offset..<min(all.count, offset + blockSize)])
                offset += blockSize
                if block.allSatisfy({ $0 == 0 }) {
                    sizes.append(0)
                    sparse += UInt64(block.count)
                } else if let compressed = compressor.compress(block) {
                    sizes.append(UInt32(compressed.count))
                    blocks.append(compressed)
                } else {
                    sizes.append(UInt32(block.count) | SquashfsFormat.dataUncompressed)
                    blocks.append(Array(block))
                }
            }
        }
        return .blocks(file: file, sizes: sizes, data: blocks, first: first, sparse: sparse)
    }

    private func pack(tail: (file: SourceFile, offset: Int64, length: Int), key: ContentKey, into layoutIndex: Int) throws(SquashfsError) {
        if fragmentLength + tail.length > blockSize { try closeFragment() }
        layouts[layoutIndex].fragment = UInt32(fragmentKeys.count)
        layouts[layoutIndex].fragmentOffset = UInt32(fragmentLength)
        fragmentTails.append(tail)
        fragmentLength += tail.length
        fragmentMembers += key.bytes
        fragmentMembers.appendLE(UInt32(tail.length))
        if key.bytes[0] & 0xF0 == 0 { try closeFragment() }
    }

    private func closeFragment() throws(SquashfsError) {
        guard fragmentLength > 0 else { return }
        let fragmentIndex = fragmentKeys.count
        let key = ContentKey(SHA256.hash(data: fragmentMembers))
        fragmentKeys.append(key)
        let tails = fragmentTails
        fragmentTails = []
        fragmentLength = 0
        fragmentMembers = []
        if let (source, run) = reuse?.fragment(key) {
            try compression.submit(ready: .reusedFragment(index: fragmentIndex, source: source, run: run), emit: emit)
        } else {
            var bytes: [UInt8] = []
            bytes.reserveCapacity(blockSize)
            for tail in tails {
                let reader = try tail.file.open()
                defer { reader.close() }
                bytes += try reader.read(at: tail.offset, count: tail.length)
            }
            try compression.submit(
                { compressor in
                    let compressed = bytes.withUnsafeBytes { compressor.compress($0) }
                    if let compressed {
                        return .fragment(index: fragmentIndex, size: UInt32(compressed.count), data: compressed, uncompressed: bytes.count)
                    }
                    return .fragment(
                        index: fragmentIndex, size: UInt32(bytes.count) | SquashfsFormat.dataUncompressed, data: bytes, uncompressed: bytes.count)
                }, emit: emit)
        }
    }

    private func emit(_ emission: Emission) throws(SquashfsError) {
        switch emission {
        case .blocks(let file, let sizes, let data, let first, let sparse):
            if first { layouts[file].start = output.position }
            layouts[file].blockSizes += sizes
            layouts[file].sparseBytes += sparse
            for block in data { try output.append(block) }
            statistics.blocksCompressed += sizes.count
            statistics.bytesCompressed += UInt64(sizes.count * blockSize)
        case .reusedFile(let file, let source, let run):
            layouts[file].start = output.position
            layouts[file].blockSizes = run.sizes
            layouts[file].sparseBytes = UInt64(run.sizes.filter { $0 == 0 }.count) * UInt64(blockSize)
            try output.copy(from: source.descriptor, sourcePath: source.path, offset: Int64(run.start), count: Int64(run.storedBytes))
            statistics.blocksReused += run.sizes.count
            statistics.bytesReused += run.storedBytes
        case .fragment(let fragmentIndex, let size, let data, let uncompressed):
            precondition(fragmentIndex == fragments.count, "fragments are emitted in order")
            fragments.append((output.position, size))
            try output.append(data)
            statistics.fragmentsCompressed += 1
            statistics.bytesCompressed += UInt64(uncompressed)
        case .reusedFragment(let fragmentIndex, let source, let run):
            precondition(fragmentIndex == fragments.count, "fragments are emitted in order")
            fragments.append((output.position, run.size))
            let stored = Int64(run.size & ~SquashfsFormat.dataUncompressed)
            try output.copy(from: source.descriptor, sourcePath: source.path, offset: Int64(run.start), count: stored)
            statistics.fragmentsReused += 1
            statistics.bytesReused += UInt64(stored)
        }
    }
}
