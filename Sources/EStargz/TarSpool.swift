import Archive
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A layer's tar held aside so its entries can be written in another order: headers in memory, file bodies in an
/// unlinked temporary file. Needed only when prioritized files must move to the front of the blob.
final class TarSpool {
    struct Entry {
        var header: TarHeader
        var bodyOffset: Int64
    }

    /// Entries in tar order; a later entry with the same name replaces the earlier one (as extraction would).
    private(set) var entries: [Entry] = []
    private var indexByName: [String: Int] = [:]
    private let fd: Int32
    private let path: String

    /// Reads the whole tar from `reader`, dropping an existing TOC and landmarks (they are re-created).
    init(reading reader: TarReader, directory: String) throws {
        path = (directory as NSString).appendingPathComponent("estargz-spool-\(UUID().uuidString)")
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw EStargzError.invalidInput("cannot create spool file \(path): \(String(cString: strerror(errno)))") }
        unlink(path)
        var written: Int64 = 0
        var ordered: [Entry?] = []
        while let header = try reader.next() {
            let name = cleanEntryName(header.name)
            if EStargzWriter.isGeneratedName(name) {
                try reader.readContents { _ in }
                continue
            }
            let offset = written
            try reader.readContents { piece in
                try Self.writeAll(fd, piece, path: path)
                written += Int64(piece.count)
            }
            if let earlier = indexByName[name] { ordered[earlier] = nil }
            indexByName[name] = ordered.count
            ordered.append(Entry(header: header, bodyOffset: offset))
        }
        try reader.drain()
        entries = ordered.compactMap { $0 }
        indexByName = [:]
        for (i, e) in entries.enumerated() { indexByName[cleanEntryName(e.header.name)] = i }
    }

    deinit { close(fd) }

    /// Streams the body of entry `index` to `body` in pieces of at most 1 MiB.
    func readBody(_ index: Int, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let entry = entries[index]
        guard entry.header.type == .regular else { return }
        var buffer = [UInt8](repeating: 0, count: Int(min(entry.header.size, 1 << 20)))
        var offset = entry.bodyOffset
        var remaining = entry.header.size
        while remaining > 0 {
            let want = Int(min(remaining, Int64(buffer.count)))
            let got = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(offset)) }
            guard got > 0 else { throw EStargzError.invalidInput("spool file \(path): short read") }
            try buffer.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[..<got])) }
            offset += Int64(got)
            remaining -= Int64(got)
        }
    }

    /// The write order that puts `prioritized` (paths in access order) first, as the reference builder does: for
    /// each path its parent directories, then a hard link's target, then the entry itself, each entry once. Paths
    /// not in the layer are returned as `missing`. Unlike the reference, a parent directory absent from the tar is
    /// not an error (tars often omit them); the path itself must exist.
    func prioritizedOrder(_ prioritized: [String]) -> (front: [Int], rest: [Int], missing: [String]) {
        var moved = [Bool](repeating: false, count: entries.count)
        var front: [Int] = []
        var missing: [String] = []

        func move(_ name: String, depth: Int) {
            guard depth < 256 else { return }
            if !name.isEmpty {
                let parent = (name as NSString).deletingLastPathComponent
                move(parent == name ? "" : parent, depth: depth + 1)
            }
            guard let index = indexByName[name], !moved[index] else { return }
            let header = entries[index].header
            if header.type == .hardLink {
                let target = cleanEntryName(header.linkName)
                if target != name { move(target, depth: depth + 1) }
            }
            guard !moved[index] else { return }
            moved[index] = true
            front.append(index)
        }

        for path in prioritized {
            let name = cleanEntryName(path)
            guard indexByName[name] != nil else {
                missing.append(path)
                continue
            }
            move(name, depth: 0)
        }
        let rest = entries.indices.filter { !moved[$0] }
        return (front, rest, missing)
    }

    private static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        var rest = bytes
        while !rest.isEmpty {
            let n = write(fd, rest.baseAddress, rest.count)
            if n < 0 {
                if errno == EINTR { continue }
                throw EStargzError.invalidInput("cannot write spool file \(path): \(String(cString: strerror(errno)))")
            }
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
        }
    }
}
