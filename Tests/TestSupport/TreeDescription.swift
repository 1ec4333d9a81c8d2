import Blocking
import CLinux
import Crypto
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Everything a tree comparison looks at for one path: type, mode, owner, size, content hash, link target,
/// link count and extended attributes.
public struct TreeEntry: Equatable, CustomStringConvertible, Sendable {
    public var type: String
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var size: Int64
    public var contentHash: String
    public var linkTarget: String
    public var links: UInt
    public var xattrs: [String: String]
    /// Modification time in seconds; nil unless asked for.
    public var mtime: Int64?

    public var description: String {
        "\(type) \(String(mode, radix: 8)) \(uid):\(gid) \(size) \(contentHash.prefix(12)) ->\(linkTarget) n=\(links) \(xattrs)"
            + (mtime.map { " t=\($0)" } ?? "")
    }
}

/// `describeTree` on a thread of its own: it reads and hashes every file, which must not hold up the cooperative
/// pool other tests' servers run on.
public func describeTreeOffThePool(_ root: String, times: Bool = false) async throws -> [String: TreeEntry] {
    try await runBlocking { try describeTree(root, times: times) }
}

/// Every path under `root` (not `root` itself) as a tree comparison sees it; with `times`, modification times too.
public func describeTree(_ root: String, times: Bool = false) throws -> [String: TreeEntry] {
    var result: [String: TreeEntry] = [:]
    guard let enumerator = FileManager.default.enumerator(atPath: root) else { return result }
    for case let relative as String in enumerator {
        let path = "\(root)/\(relative)"
        var info = stat()
        guard lstat(path, &info) == 0 else { continue }
        let format = info.st_mode & S_IFMT
        var entry = TreeEntry(
            type: "?", mode: info.st_mode & 0o7777, uid: info.st_uid, gid: info.st_gid, size: 0, contentHash: "", linkTarget: "",
            links: UInt(info.st_nlink), xattrs: readXattrs(path), mtime: times ? Int64(info.st_mtim.tv_sec) : nil)
        switch format {
        case S_IFREG:
            entry.type = "file"
            entry.size = Int64(info.st_size)
            entry.contentHash = SHA256.hash(data: try readClosingOnExec(path)).map { String(format: "%02x", $0) }.joined()
        case S_IFDIR:
            entry.type = "dir"
            entry.links = 0  // directory link counts depend on subdirectory counts only; compared through the entries
        case S_IFLNK:
            entry.type = "symlink"
            entry.linkTarget = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? ""
        case S_IFCHR: entry.type = "char \(info.st_rdev)"
        case S_IFBLK: entry.type = "block \(info.st_rdev)"
        case S_IFIFO: entry.type = "fifo"
        default: break
        }
        result[relative] = entry
    }
    return result
}

/// A file's bytes, read through a descriptor a concurrently spawned process cannot inherit (Foundation's
/// `contents(atPath:)` opens without close-on-exec; a file of a mount left open in a child keeps the mount busy).
public func readClosingOnExec(_ path: String) throws -> Data {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw TestSupportError("cannot open \(path): errno \(errno)") }
    return try FileHandle(fileDescriptor: fd, closeOnDealloc: true).readToEnd() ?? Data()
}

public func readXattrs(_ path: String) -> [String: String] {
    var names = [CChar](repeating: 0, count: 4096)
    let length = llistxattr(path, &names, names.count)
    guard length > 0 else { return [:] }
    var result: [String: String] = [:]
    let raw = names.prefix(length).map { UInt8(bitPattern: $0) }
    for nameBytes in raw.split(separator: 0) {
        let name = String(decoding: nameBytes, as: UTF8.self)
        var value = [UInt8](repeating: 0, count: 4096)
        let size = lgetxattr(path, name, &value, value.count)
        result[name] = size >= 0 ? value.prefix(size).map { String(format: "%02x", $0) }.joined() : "?"
    }
    return result
}

/// Records an issue for each path `reader` shows differently from `expected` (the first five), and for paths only
/// one side has.
public func expectSameTree(_ actual: [String: TreeEntry], _ expected: [String: TreeEntry], reader: String, sourceLocation: SourceLocation = #_sourceLocation) {
    let missing = Set(expected.keys).subtracting(actual.keys)
    let extra = Set(actual.keys).subtracting(expected.keys)
    #expect(missing.isEmpty && extra.isEmpty, "\(reader): missing \(missing.sorted().prefix(5)), extra \(extra.sorted().prefix(5))", sourceLocation: sourceLocation)
    var differences = 0
    for (path, entry) in expected.sorted(by: { $0.key < $1.key }) where actual[path] != nil && actual[path] != entry {
        differences += 1
        if differences <= 5 { Issue.record("\(reader): /\(path) is \(actual[path]!), expected \(entry)", sourceLocation: sourceLocation) }
    }
}
