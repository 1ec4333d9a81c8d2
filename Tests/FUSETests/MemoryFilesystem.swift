import FUSE
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The byte at `offset` of the pattern files: not periodic at any power of two, so a read from the
/// wrong offset does not compare equal by accident.
func patternByte(_ offset: Int) -> UInt8 {
    UInt8(truncatingIfNeeded: (offset &* 31) ^ (offset >> 9) ^ (offset >> 17))
}

func pattern(offset: Int, count: Int) -> [UInt8] {
    (offset..<(offset + count)).map(patternByte)
}

/// A small read-only tree held in memory:
///
/// ```
/// /                 ino 1
/// ├── dir/          ino 2
/// │   └── nested.txt  ino 11
/// ├── small.txt     ino 3  (uid 1234, gid 5678, 0644, fixed mtime)
/// ├── big.bin       ino 4  (10 MiB pattern)
/// ├── link -> small.txt  ino 5
/// ├── hard1, hard2  ino 6  (one inode, nlink 2)
/// ├── xattr.txt     ino 7  (user.slipway.test, user.slipway.empty)
/// ├── broken        ino 8  (every read throws EIO)
/// ├── slow.bin      ino 9  (16 MiB pattern; every read sleeps 200 ms)
/// └── many/         ino 10 (2000 files with long names, ino 1000...)
/// ```
final class MemoryFilesystem: FUSEFilesystem {
    enum Content: Sendable {
        case bytes([UInt8])
        case pattern
        case failing
        case slow
    }

    struct Node: Sendable {
        var attributes: FUSEAttributes
        var children: [(name: [UInt8], ino: UInt64)] = []
        var content: Content? = nil
        var target: [UInt8]? = nil
        var xattrs: [(name: [UInt8], value: [UInt8])] = []
    }

    static let mtime: (seconds: Int64, nanoseconds: UInt32) = (1_700_000_000, 123_456_789)
    static let smallContent = Array("hello, fuse\n".utf8)
    static let bigSize = 10 << 20
    static let slowSize = 16 << 20
    static let slowDelayMicroseconds: UInt32 = 200_000
    static let manyCount = 2000
    static let xattrValue = Array("value of the test attribute".utf8)

    static func manyName(_ index: Int) -> String {
        "entry-\(index)-with-a-fairly-long-name-to-fill-readdir-pages"
    }

    let nodes: [UInt64: Node]
    let negativeEntryTimeout: Double
    /// Entry and attribute timeout for everything.
    let cacheTimeout: Double
    var attributeTimeout: Double { cacheTimeout }

    private let lookups = Mutex<[String: Int]>([:])
    private let slowReads = Mutex<(inFlight: Int, maximum: Int, total: Int)>((0, 0, 0))
    private let openFiles = Mutex<Int>(0)

    init(negativeEntryTimeout: Double = 0, cacheTimeout: Double = 60) {
        self.negativeEntryTimeout = negativeEntryTimeout
        self.cacheTimeout = cacheTimeout
        func attributes(_ ino: UInt64, _ mode: UInt32, size: Int = 0, nlink: UInt32 = 1) -> FUSEAttributes {
            FUSEAttributes(
                ino: ino, mode: mode, nlink: nlink, uid: 1234, gid: 5678, size: UInt64(size),
                mtimeSeconds: Self.mtime.seconds, mtimeNanoseconds: Self.mtime.nanoseconds
            )
        }
        let directory: UInt32 = 0o040755
        let file: UInt32 = 0o100644
        var nodes: [UInt64: Node] = [:]
        nodes[1] = Node(
            attributes: attributes(1, directory, nlink: 4),
            children: [
                ("dir", 2), ("small.txt", 3), ("big.bin", 4), ("link", 5), ("hard1", 6), ("hard2", 6),
                ("xattr.txt", 7), ("broken", 8), ("slow.bin", 9), ("many", 10),
            ].map { (Array($0.0.utf8), $0.1) }
        )
        nodes[2] = Node(attributes: attributes(2, directory, nlink: 2), children: [(Array("nested.txt".utf8), 11)])
        nodes[11] = Node(attributes: attributes(11, file, size: 7), content: .bytes(Array("nested\n".utf8)))
        nodes[3] = Node(attributes: attributes(3, file, size: Self.smallContent.count), content: .bytes(Self.smallContent))
        nodes[4] = Node(attributes: attributes(4, file, size: Self.bigSize), content: .pattern)
        nodes[5] = Node(attributes: attributes(5, 0o120777, size: 9), target: Array("small.txt".utf8))
        nodes[6] = Node(attributes: attributes(6, file, size: 7, nlink: 2), content: .bytes(Array("linked\n".utf8)))
        nodes[7] = Node(
            attributes: attributes(7, file, size: 1), content: .bytes([120]),
            xattrs: [(Array("user.slipway.test".utf8), Self.xattrValue), (Array("user.slipway.empty".utf8), [])]
        )
        nodes[8] = Node(attributes: attributes(8, file, size: 4096), content: .failing)
        nodes[9] = Node(attributes: attributes(9, file, size: Self.slowSize), content: .slow)
        var many = Node(attributes: attributes(10, directory, nlink: 2))
        for index in 0..<Self.manyCount {
            let ino = UInt64(1000 + index)
            many.children.append((Array(Self.manyName(index).utf8), ino))
            nodes[ino] = Node(attributes: attributes(ino, file, size: 0), content: .bytes([]))
        }
        nodes[10] = many
        self.nodes = nodes
    }

    // MARK: Observations for the tests

    func lookupCount(_ name: String) -> Int {
        lookups.withLock { $0[name] ?? 0 }
    }

    var slowReadStatistics: (inFlight: Int, maximum: Int, total: Int) {
        slowReads.withLock { $0 }
    }

    var openFileCount: Int {
        openFiles.withLock { $0 }
    }

    // MARK: FUSEFilesystem

    private func node(_ ino: UInt64) throws -> Node {
        guard let node = nodes[ino] else { throw FUSEError.notFound }
        return node
    }

    func lookup(parent: UInt64, name: [UInt8]) throws -> FUSEEntry {
        lookups.withLock { $0[String(decoding: name, as: UTF8.self), default: 0] += 1 }
        let directory = try node(parent)
        guard directory.attributes.isDirectory else { throw FUSEError.notDirectory }
        guard let child = directory.children.first(where: { $0.name == name }) else { throw FUSEError.notFound }
        return FUSEEntry(attributes: try node(child.ino).attributes, attributeTimeout: cacheTimeout, entryTimeout: cacheTimeout)
    }

    func getattr(_ ino: UInt64) throws -> FUSEAttributes {
        try node(ino).attributes
    }

    func readlink(_ ino: UInt64) throws -> [UInt8] {
        guard let target = try node(ino).target else { throw FUSEError.invalidArgument }
        return target
    }

    func open(_ ino: UInt64, flags: Int32) throws -> UInt64 {
        guard flags & O_ACCMODE == O_RDONLY else { throw FUSEError.readOnlyFilesystem }
        guard try node(ino).content != nil else { throw FUSEError.isDirectory }
        openFiles.withLock { $0 += 1 }
        return ino &* 1000
    }

    func release(_ ino: UInt64, fh: UInt64) {
        openFiles.withLock { $0 -= 1 }
    }

    func read(_ ino: UInt64, fh: UInt64, offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard fh == ino &* 1000 else { throw FUSEError.badFileHandle }
        let node = try node(ino)
        let size = Int(node.attributes.size)
        let start = Int(clamping: offset)
        guard start < size else { return 0 }
        let count = min(buffer.count, size - start)
        switch node.content {
        case .bytes(let bytes):
            buffer.copyBytes(from: bytes[start..<(start + count)])
        case .pattern:
            for index in 0..<count {
                buffer[index] = patternByte(start + index)
            }
        case .slow:
            slowReads.withLock { state in
                state.inFlight += 1
                state.total += 1
                state.maximum = max(state.maximum, state.inFlight)
            }
            usleep(Self.slowDelayMicroseconds)
            slowReads.withLock { $0.inFlight -= 1 }
            for index in 0..<count {
                buffer[index] = patternByte(start + index)
            }
        case .failing:
            throw FUSEError.io
        case nil:
            throw FUSEError.isDirectory
        }
        return count
    }

    func readdir(_ ino: UInt64) throws -> [FUSEDirectoryEntry] {
        let directory = try node(ino)
        guard directory.attributes.isDirectory else { throw FUSEError.notDirectory }
        return try directory.children.map { child in
            (name: child.name, ino: child.ino, mode: try node(child.ino).attributes.mode)
        }
    }

    func getxattr(_ ino: UInt64, name: [UInt8]) throws -> [UInt8] {
        guard let attribute = try node(ino).xattrs.first(where: { $0.name == name }) else { throw FUSEError.noData }
        return attribute.value
    }

    func listxattr(_ ino: UInt64) throws -> [[UInt8]] {
        try node(ino).xattrs.map(\.name)
    }

    func statfs() throws -> FUSEFilesystemStatistics {
        FUSEFilesystemStatistics(blockSize: 4096, blocks: 1000, files: UInt64(nodes.count), maximumNameLength: 255)
    }
}
