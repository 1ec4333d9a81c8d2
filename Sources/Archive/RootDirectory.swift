#if canImport(Glibc)
import Glibc
#endif

/// File-descriptor based access to an extraction root. Every path is resolved component by component
/// with `openat(O_NOFOLLOW)`; symlinks met on the way are resolved *inside* the root (like a chroot:
/// absolute targets start at the root, `..` never climbs above it), so nothing created by an archive
/// can redirect a write outside the root. Final components are never followed.
///
/// Directory fds are cached by relative path. Cache invalidation is deferred to `beginOperation()` so
/// fds handed out during one operation stay valid until it ends.
final class RootDirectory {
    let fd: Int32
    let path: String
    /// Keyed by the UTF-8 bytes of the relative path: `String` equality is canonical equivalence, and two
    /// names equal as Swift strings can be different directories on disk.
    private var cache: [[UInt8]: Int32] = [:]
    private var owned: [Int32] = []
    private var dirty = false
    private static let maxCached = 512
    private static let maxSymlinkHops = 40
    /// Bounds the depth of any tree an archive can build through symlinked parents, so removing it later
    /// (recursively) cannot exhaust the stack or the process's descriptors.
    static let maxDepth = 1024

    init(path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw ArchiveError.io("open root directory", path) }
        self.fd = fd
        self.path = path
    }

    deinit {
        dropCache()
        Glibc.close(fd)
    }

    /// Marks cached directory fds as possibly stale (a directory was removed).
    func invalidate() { dirty = true }

    /// Call before each operation: drops the cache if it is stale or too big.
    func beginOperation() {
        if dirty || owned.count > RootDirectory.maxCached {
            dropCache()
            dirty = false
        }
    }

    private func dropCache() {
        for d in owned { Glibc.close(d) }
        owned.removeAll(keepingCapacity: true)
        cache.removeAll(keepingCapacity: true)
    }

    /// Returns an fd for the directory at `components` (relative to the root; empty = root).
    /// Missing directories are created (mode 0755) when `create`, else nil is returned.
    /// The fd is owned by the cache: do not close it.
    func directory(_ components: [String], create: Bool, entry: String) throws -> Int32? {
        if components.isEmpty { return fd }
        guard components.count <= RootDirectory.maxDepth else {
            throw ArchiveError(.limitExceeded(detail: "'\(entry)' is deeper than \(RootDirectory.maxDepth) directories"))
        }
        let key = Array(components.joined(separator: "/").utf8)
        if let cached = cache[key] { return cached }

        var pending = components
        var index = 0
        var resolved: [String] = []
        var current = fd
        var hops = 0
        walk: while index < pending.count {
            let component = pending[index]
            let resolvedPath = resolved.isEmpty ? component : resolved.joined(separator: "/") + "/" + component
            let resolvedKey = Array(resolvedPath.utf8)
            if let cached = cache[resolvedKey] {
                current = cached
                resolved.append(component)
                index += 1
                continue
            }
            var created = false
            while true {
                let next = openat(current, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                if next >= 0 {
                    cache[resolvedKey] = next
                    owned.append(next)
                    current = next
                    resolved.append(component)
                    index += 1
                    continue walk
                }
                let code = errno
                if code == EINTR { continue }
                if code == ENOENT {
                    guard create else { return nil }
                    if created { throw ArchiveError.io("open directory", resolvedPath, code) }
                    if mkdirat(current, component, 0o755) != 0 && errno != EEXIST {
                        throw ArchiveError.io("mkdir", resolvedPath)
                    }
                    created = true
                    continue
                }
                if code == ELOOP || code == ENOTDIR {
                    guard let target = RootDirectory.readLink(current, component) else {
                        throw ArchiveError.io("open directory (a non-directory is in the way) for '\(entry)'", resolvedPath, ENOTDIR)
                    }
                    hops += 1
                    if hops > RootDirectory.maxSymlinkHops {
                        throw ArchiveError(.limitExceeded(detail: "too many levels of symbolic links resolving '\(entry)'"))
                    }
                    // Bytes, not Characters: see `Extractor.components(of:)`.
                    let targetBytes = Array(target.utf8)
                    var base = targetBytes.first == UInt8(ascii: "/") ? [] : resolved
                    for part in targetBytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
                        if part.elementsEqual(".".utf8) { continue }
                        if part.elementsEqual("..".utf8) {
                            _ = base.popLast()  // clamp at the root
                        } else {
                            base.append(String(decoding: part, as: UTF8.self))
                        }
                    }
                    guard base.count + pending.count - index - 1 <= RootDirectory.maxDepth else {
                        throw ArchiveError(.limitExceeded(detail: "'\(entry)' resolves deeper than \(RootDirectory.maxDepth) directories"))
                    }
                    pending = base + pending[(index + 1)...]
                    index = 0
                    resolved = []
                    current = fd
                    continue walk
                }
                throw ArchiveError.io("open directory", resolvedPath, code)
            }
        }
        if cache[key] == nil { cache[key] = current }  // alias through symlinks; fd owned once
        return current
    }

    static func readLink(_ dirFD: Int32, _ name: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4097)
        let n = readlinkat(dirFD, name, &buffer, 4096)
        if n < 0 { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: - Removal

    /// Removes `name` in `parent` (file, symlink or whole directory tree). Missing is fine.
    func remove(parent: Int32, name: String, display: String) throws {
        var info = stat()
        let wasSymlink = fstatat(parent, name, &info, AT_SYMLINK_NOFOLLOW) == 0 && (info.st_mode & S_IFMT) == S_IFLNK
        if unlinkat(parent, name, 0) == 0 {
            // A cached directory reached through this symlink must not be used for later entries.
            if wasSymlink { invalidate() }
            return
        }
        let code = errno
        if code == ENOENT { return }
        if code == EISDIR || code == EPERM {
            try removeTree(parent: parent, name: name, display: display)
            invalidate()
            return
        }
        throw ArchiveError.io("unlink", display, code)
    }

    private func removeTree(parent: Int32, name: String, display: String) throws {
        let dfd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if dfd < 0 {
            let code = errno
            if code == ENOENT { return }
            if code == ENOTDIR || code == ELOOP {
                if unlinkat(parent, name, 0) != 0 && errno != ENOENT { throw ArchiveError.io("unlink", display) }
                return
            }
            throw ArchiveError.io("open directory", display, code)
        }
        let children = try RootDirectory.listDirectory(dfd, display: display)  // closes dfd
        let again = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if again < 0 { throw ArchiveError.io("open directory", display) }
        defer { Glibc.close(again) }
        if geteuid() != 0 { fchmod(again, 0o700) }  // make a read-only dir writable so it can be emptied
        for (child, isDir) in children {
            let childDisplay = display + "/" + child
            if !isDir, unlinkat(again, child, 0) == 0 { continue }
            if !isDir, errno != EISDIR && errno != EPERM {
                if errno == ENOENT { continue }
                throw ArchiveError.io("unlink", childDisplay)
            }
            try removeTree(parent: again, name: child, display: childDisplay)
        }
        if unlinkat(parent, name, AT_REMOVEDIR) != 0 && errno != ENOENT {
            throw ArchiveError.io("rmdir", display)
        }
    }

    /// Lists a directory (names and whether each is a directory); consumes `dirFD`.
    static func listDirectory(_ dirFD: Int32, display: String) throws -> [(String, Bool)] {
        guard let dir = fdopendir(dirFD) else {
            let code = errno
            Glibc.close(dirFD)
            throw ArchiveError.io("opendir", display, code)
        }
        defer { closedir(dir) }
        var out: [(String, Bool)] = []
        while let ent = readdir(dir) {
            let name = withUnsafePointer(to: &ent.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if name == "." || name == ".." { continue }
            var isDir = ent.pointee.d_type == UInt8(DT_DIR)
            if ent.pointee.d_type == UInt8(DT_UNKNOWN) {
                var st = stat()
                if fstatat(dirFD, name, &st, AT_SYMLINK_NOFOLLOW) == 0 { isDir = (st.st_mode & S_IFMT) == S_IFDIR }
            }
            out.append((name, isDir))
        }
        return out
    }
}
