import Foundation
import OCI
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Uncompressed eStargz chunks on disk, named by their digest: a chunk fetched once for any layer, image or version
/// is never fetched again, by this mount or any other process sharing the directory.
///
/// Writes go to a temporary file renamed into place, so a name never holds a partial chunk from a live writer. No
/// fsync per chunk (prefetch writes thousands): instead a process checks a chunk's digest the first time it uses
/// it, so a chunk torn by a crash is found, removed and fetched again.
public final class ChunkCache: Sendable {
    public let root: String
    /// Size the cache is trimmed to (oldest chunks first) when a write takes it over.
    public let limit: Int64

    private struct State {
        var size: Int64 = 0
        var verified: Set<String> = []
        var evicting = false
    }
    private let state = Mutex(State())

    public init(root: String, limit: Int64) throws {
        self.root = root
        self.limit = limit
        for sub in ["sha256", "tmp", "tails"] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(sub)", withIntermediateDirectories: true)
        }
        let size = Self.scan(root).reduce(0) { $0 + $1.size }
        state.withLock { $0.size = size }
    }

    public var size: Int64 { state.withLock { $0.size } }

    func path(_ digest: Digest) -> String {
        "\(root)/sha256/\(digest.hex.prefix(2))/\(digest.hex)"
    }

    /// `length` bytes from `offset` of a cached chunk, or nil when it is not cached (or was found corrupt).
    public func read(_ digest: Digest, offset: Int, length: Int) -> [UInt8]? {
        let file = path(digest)
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        if !state.withLock({ $0.verified.contains(digest.hex) }) {
            guard let whole = Self.readAll(fd), OCI.Digest.sha256(of: whole) == digest else {
                unlink(file)
                return nil
            }
            state.withLock { _ = $0.verified.insert(digest.hex) }
            let end = min(whole.count, offset + length)
            return offset < end ? Array(whole[offset..<end]) : []
        }
        return readFully(fd, offset: Int64(offset), length: length)
    }

    /// An open descriptor of a cached chunk checked against its digest (once per process, as `read` does), for the
    /// kernel to read from (FUSE passthrough); nil when it is not cached or was found corrupt.
    public func verifiedDescriptor(_ digest: Digest) -> Int32? {
        let file = path(digest)
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        if !state.withLock({ $0.verified.contains(digest.hex) }) {
            guard let whole = Self.readAll(fd), OCI.Digest.sha256(of: whole) == digest else {
                close(fd)
                unlink(file)
                return nil
            }
            state.withLock { _ = $0.verified.insert(digest.hex) }
        }
        return fd
    }

    public func contains(_ digest: Digest) -> Bool {
        access(path(digest), F_OK) == 0
    }

    /// Stores a chunk the caller has verified against `digest`.
    public func store(_ digest: Digest, bytes: [UInt8]) throws {
        let final = path(digest)
        if access(final, F_OK) == 0 { return }
        let directory = (final as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let temporary = "\(root)/tmp/\(digest.hex).\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw LazyFSError.io(path: temporary, errno: errno) }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, bytes.count - written) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let code = errno
                close(fd)
                unlink(temporary)
                throw LazyFSError.io(path: temporary, errno: code)
            }
            written += n
        }
        close(fd)
        guard rename(temporary, final) == 0 else {
            let code = errno
            unlink(temporary)
            throw LazyFSError.io(path: final, errno: code)
        }
        let over = state.withLock { s -> Bool in
            s.verified.insert(digest.hex)
            s.size += Int64(bytes.count)
            guard s.size > limit, !s.evicting else { return false }
            s.evicting = true
            return true
        }
        if over { evict() }
    }

    /// The tail of a layer blob (footer and TOC) kept by an earlier mount, with its offset in the blob. The caller
    /// verifies it (the TOC digest) before trusting it.
    public func tail(of layer: Digest) -> (start: Int64, bytes: [UInt8])? {
        guard let data = FileManager.default.contents(atPath: tailPath(layer)), data.count >= 8 else { return nil }
        let start = data.prefix(8).enumerated().reduce(Int64(0)) { $0 | Int64($1.element) << (8 * $1.offset) }
        return (start, Array(data.dropFirst(8)))
    }

    public func storeTail(of layer: Digest, bytes: [UInt8], from start: Int64) throws {
        let header = (0..<8).map { UInt8(truncatingIfNeeded: start >> (8 * $0)) }
        try Data(header + bytes).write(to: URL(fileURLWithPath: tailPath(layer)), options: .atomic)
    }

    private func tailPath(_ layer: Digest) -> String { "\(root)/tails/\(layer.hex)" }

    /// Whether an earlier whole read found `layer`'s bytes to match the gzip index `index` (digest, diffID and
    /// every chunk): a later mount whose chunks are all cached need not read the layer again.
    public func isVerified(layer: Digest, index: Digest) -> Bool {
        FileManager.default.fileExists(atPath: verifiedPath(layer, index))
    }

    public func markVerified(layer: Digest, index: Digest) throws {
        let path = verifiedPath(layer, index)
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data().write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    private func verifiedPath(_ layer: Digest, _ index: Digest) -> String { "\(root)/verified/\(layer.hex)-\(index.hex)" }

    /// Removes the least recently written chunks until the cache is at 90 % of its limit.
    func evict() {
        defer { state.withLock { $0.evicting = false } }
        var files = Self.scan(root).sorted { $0.mtime < $1.mtime }
        var size = files.reduce(0) { $0 + $1.size }
        let target = limit / 10 * 9
        while size > target, !files.isEmpty {
            let oldest = files.removeFirst()
            if unlink(oldest.path) == 0 { size -= oldest.size }
        }
        state.withLock { $0.size = size }
    }

    private static func scan(_ root: String) -> [(path: String, size: Int64, mtime: Int)] {
        var result: [(String, Int64, Int)] = []
        let base = "\(root)/sha256"
        for prefix in (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [] {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: "\(base)/\(prefix)")) ?? [] {
                let path = "\(base)/\(prefix)/\(name)"
                var info = stat()
                if stat(path, &info) == 0 { result.append((path, Int64(info.st_size), info.st_mtim.tv_sec)) }
            }
        }
        return result
    }

    private static func readAll(_ fd: Int32) -> [UInt8]? {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return nil }
        guard let bytes = readFully(fd, offset: 0, length: Int(info.st_size)), bytes.count == Int(info.st_size) else { return nil }
        return bytes
    }
}
