import CLinux
#if canImport(Glibc)
import Glibc
#endif

/// Applies tar entries to a root directory safely (see `RootDirectory` for path resolution).
/// Single-threaded; runs on the extraction thread.
final class Extractor {
    private let root: RootDirectory
    private let options: ApplyOptions
    private let isRoot = geteuid() == 0
    private(set) var entries = 0
    private(set) var skipped: [String] = []
    private var deferredDirectories: [(components: [String], header: TarHeader)] = []
    /// Paths created by this layer (apply mode), so opaque dirs / whiteouts only hide lower content.
    /// Keyed by bytes: `String` equality is canonical equivalence, and `cafe\u{301}` is not `café` on disk.
    private var layerPaths: Set<[UInt8]> = []

    /// Records something not applied. The list is capped so a hostile layer cannot grow it without bound;
    /// the last line counts what was left out.
    private func note(_ text: String) {
        if skipped.count < Extractor.maxNotes {
            skipped.append(text)
        } else {
            omittedNotes += 1
        }
    }

    private static let maxNotes = 100
    private var omittedNotes = 0

    init(root: RootDirectory, options: ApplyOptions) {
        self.root = root
        self.options = options
    }

    /// Normalises a tar name into components: strips leading `/`, drops `.`, resolves `..`
    /// lexically; throws when the name escapes the root or exceeds the kernel's limits.
    ///
    /// Splitting is on UTF-8 bytes, never on `Character`s: a combining mark after `/` makes one Swift
    /// character of both, which would hide a separator from a character-wise split while the kernel still
    /// sees it, and let a symlink in the middle of the "component" lead out of the root.
    static func components(of name: String) throws -> [String] {
        let bytes = Array(name.utf8)
        if bytes.contains(0) { throw ArchiveError(.pathTraversal(entry: name)) }
        guard bytes.count <= Int(PATH_MAX) else {
            throw ArchiveError(.limitExceeded(detail: "entry name longer than \(PATH_MAX) bytes"))
        }
        var out: [String] = []
        for part in bytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            if part.elementsEqual(".".utf8) { continue }
            if part.elementsEqual("..".utf8) {
                if out.isEmpty { throw ArchiveError(.pathTraversal(entry: name)) }
                out.removeLast()
                continue
            }
            guard part.count <= Int(NAME_MAX) else {
                throw ArchiveError(.limitExceeded(detail: "a component of '\(name.prefix(200))' is longer than \(NAME_MAX) bytes"))
            }
            out.append(String(decoding: part, as: UTF8.self))
        }
        return out
    }

    func extract(_ header: TarHeader, from reader: TarReader) throws {
        entries += 1
        root.beginOperation()
        var components = try Extractor.components(of: header.name)
        guard let leaf = components.popLast() else {
            // the root itself ("./")
            if header.type == .directory {
                deferredDirectories.append(([], header))
                return
            }
            throw ArchiveError(.pathTraversal(entry: header.name))
        }
        if leaf.utf8.starts(with: ".wh.".utf8), try handleWhiteout(parent: components, leaf: leaf, header: header) {
            return
        }
        guard let parent = try root.directory(components, create: true, entry: header.name) else {
            throw ArchiveError.io("resolve parent of", header.name, ENOENT)
        }
        if options.whiteouts == .apply { recordLayerPath(components, leaf) }

        switch header.type {
        case .regular:
            try writeRegularFile(parent: parent, leaf: leaf, header: header, reader: reader)
        case .directory:
            try makeDirectory(parent: parent, components: components, leaf: leaf, header: header)
        case .symbolicLink:
            try makeSymlink(parent: parent, leaf: leaf, header: header)
        case .hardLink:
            try makeHardLink(parent: parent, leaf: leaf, header: header)
        case .characterDevice, .blockDevice, .fifo:
            try makeNode(parent: parent, leaf: leaf, header: header)
        case .other(let flag):
            throw ArchiveError(.unsupportedEntryType(entry: header.name, type: String(UnicodeScalar(flag))))
        }
    }

    /// Applies deferred directory metadata (deepest first). Call once after the last entry.
    func finish() throws {
        let ordered = deferredDirectories.enumerated().sorted {
            $0.element.components.count != $1.element.components.count
                ? $0.element.components.count > $1.element.components.count : $0.offset < $1.offset
        }
        for (_, item) in ordered {
            root.beginOperation()
            let display = item.header.name
            var dfd: Int32
            if item.components.isEmpty {
                dfd = root.fd
            } else {
                guard let parent = try root.directory(Array(item.components.dropLast()), create: false, entry: display)
                else { continue }
                dfd = openat(parent, item.components.last!, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                if dfd < 0 { continue }  // replaced by a later entry
            }
            defer { if dfd != root.fd { close(dfd) } }
            try setOwner(fd: dfd, header: item.header)
            if fchmod(dfd, mode_t(item.header.mode & 0o7777)) != 0 { throw ArchiveError.io("chmod", display) }
            var times = Extractor.times(item.header)
            if futimens(dfd, &times) != 0 { throw ArchiveError.io("set times of", display) }
        }
        deferredDirectories.removeAll()
        if omittedNotes > 0 { skipped.append("… and \(omittedNotes) more notes like these") }
    }

    // MARK: - Whiteouts

    /// Returns true when the entry was fully handled as a whiteout.
    private func handleWhiteout(parent components: [String], leaf: String, header: TarHeader) throws -> Bool {
        let display = header.name
        if leaf.utf8.elementsEqual(".wh..wh..opq".utf8) {
            switch options.whiteouts {
            case .apply:
                guard let dir = try root.directory(components, create: false, entry: display) else { return true }
                try clearLowerContent(dirFD: dir, path: components.joined(separator: "/"), display: display)
                return true
            case .overlay:
                guard isRoot else { return false }
                guard let dir = try root.directory(components, create: true, entry: display) else { return true }
                let rc = fsetxattr(dir, "trusted.overlay.opaque", "y", 1, 0)
                if rc != 0 { throw ArchiveError.io("set trusted.overlay.opaque on", display) }
                return true
            }
        }
        let name = String(decoding: leaf.utf8.dropFirst(4), as: UTF8.self)
        if name.isEmpty || name.utf8.elementsEqual(".".utf8) || name.utf8.elementsEqual("..".utf8) || name.utf8.contains(UInt8(ascii: "/")) {
            throw ArchiveError(.invalidWhiteout(entry: display))
        }
        if name.utf8.starts(with: ".wh.".utf8) {  // aufs metadata such as .wh..wh.plnk
            note("ignored aufs metadata entry \(display)")
            return true
        }
        let target = (components + [name]).joined(separator: "/")
        switch options.whiteouts {
        case .apply:
            if layerPaths.contains(Array(target.utf8)) { return true }  // this layer's own content wins
            guard let dir = try root.directory(components, create: false, entry: display) else { return true }
            try root.remove(parent: dir, name: name, display: target)
            return true
        case .overlay:
            guard isRoot else { return false }
            guard let dir = try root.directory(components, create: true, entry: display) else { return true }
            try create(display: display, parent: dir, leaf: name) { mknodat(dir, name, S_IFCHR, 0) }
            var times = Extractor.times(header)
            _ = utimensat(dir, name, &times, AT_SYMLINK_NOFOLLOW)
            return true
        }
    }

    /// Opaque directory in apply mode: removes everything below `path` not created by this layer.
    private func clearLowerContent(dirFD: Int32, path: String, display: String) throws {
        let own = openat(dirFD, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if own < 0 { throw ArchiveError.io("open directory", path) }
        let children = try RootDirectory.listDirectory(own, display: path)
        for (child, isDir) in children {
            let childPath = path.isEmpty ? child : path + "/" + child
            if layerPaths.contains(Array(childPath.utf8)) {
                if isDir {
                    let sub = openat(dirFD, child, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                    if sub < 0 { continue }
                    defer { close(sub) }
                    try clearLowerContent(dirFD: sub, path: childPath, display: display)
                }
                continue
            }
            try root.remove(parent: dirFD, name: child, display: childPath)
        }
    }

    private func recordLayerPath(_ components: [String], _ leaf: String) {
        var path = components + [leaf]
        while !path.isEmpty {
            if !layerPaths.insert(Array(path.joined(separator: "/").utf8)).inserted { return }
            path.removeLast()
        }
    }

    // MARK: - Entry types

    /// Runs `make` (a *at syscall); if the name exists, removes it and retries once.
    private func create(display: String, parent: Int32, leaf: String, _ make: () -> Int32) throws {
        if make() == 0 { return }
        var code = errno
        if code == EEXIST {
            try root.remove(parent: parent, name: leaf, display: display)
            if make() == 0 { return }
            code = errno
        }
        throw ArchiveError.io("create", display, code)
    }

    private func writeRegularFile(parent: Int32, leaf: String, header: TarHeader, reader: TarReader) throws {
        let display = header.name
        let flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC
        var fd = openat(parent, leaf, flags, 0o600)
        if fd < 0 && errno == EEXIST {
            try root.remove(parent: parent, name: leaf, display: display)
            fd = openat(parent, leaf, flags, 0o600)
        }
        if fd < 0 { throw ArchiveError.io("create", display) }
        defer { close(fd) }
        try reader.readContents { piece in
            var pointer = piece.baseAddress!
            var left = piece.count
            while left > 0 {
                let n = write(fd, pointer, left)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw ArchiveError.io("write", display)
                }
                pointer += n
                left -= n
            }
        }
        try setOwner(fd: fd, header: header)
        if fchmod(fd, mode_t(header.mode & 0o7777)) != 0 { throw ArchiveError.io("chmod", display) }
        if !header.xattrs.isEmpty { try setXattrs(header, fd: fd, path: nil) }
        var times = Extractor.times(header)
        if futimens(fd, &times) != 0 { throw ArchiveError.io("set times of", display) }
    }

    private func makeDirectory(parent: Int32, components: [String], leaf: String, header: TarHeader) throws {
        let display = header.name
        if mkdirat(parent, leaf, 0o755) != 0 {
            let code = errno
            guard code == EEXIST else { throw ArchiveError.io("mkdir", display, code) }
            var st = stat()
            if fstatat(parent, leaf, &st, AT_SYMLINK_NOFOLLOW) != 0 { throw ArchiveError.io("stat", display) }
            if (st.st_mode & S_IFMT) != S_IFDIR {
                try root.remove(parent: parent, name: leaf, display: display)
                if mkdirat(parent, leaf, 0o755) != 0 { throw ArchiveError.io("mkdir", display) }
            }
        }
        if !header.xattrs.isEmpty {
            let dfd = openat(parent, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if dfd < 0 { throw ArchiveError.io("open directory", display) }
            defer { close(dfd) }
            try setXattrs(header, fd: dfd, path: nil)
        }
        deferredDirectories.append((components + [leaf], header))
    }

    private func makeSymlink(parent: Int32, leaf: String, header: TarHeader) throws {
        try create(display: header.name, parent: parent, leaf: leaf) { symlinkat(header.linkName, parent, leaf) }
        try setMetadataByName(parent: parent, leaf: leaf, header: header, chmod: false)
    }

    private func makeHardLink(parent: Int32, leaf: String, header: TarHeader) throws {
        let escape = ArchiveError(.linkEscape(entry: header.name, target: header.linkName))
        guard let target = try? Extractor.components(of: header.linkName), let targetLeaf = target.last else {
            throw escape
        }
        guard let targetParent = try root.directory(Array(target.dropLast()), create: false, entry: header.name) else {
            throw escape
        }
        var targetStat = stat()
        if fstatat(targetParent, targetLeaf, &targetStat, AT_SYMLINK_NOFOLLOW) != 0 { throw escape }
        if (targetStat.st_mode & S_IFMT) == S_IFDIR { throw escape }
        if linkat(targetParent, targetLeaf, parent, leaf, 0) == 0 { return }
        var code = errno
        if code == EEXIST {
            var st = stat()
            if fstatat(parent, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0, st.st_ino == targetStat.st_ino,
                st.st_dev == targetStat.st_dev
            {
                return  // already the same file
            }
            try root.remove(parent: parent, name: leaf, display: header.name)
            if linkat(targetParent, targetLeaf, parent, leaf, 0) == 0 { return }
            code = errno
        }
        throw ArchiveError.io("link to '\(header.linkName)'", header.name, code)
    }

    private func makeNode(parent: Int32, leaf: String, header: TarHeader) throws {
        let kind: mode_t
        switch header.type {
        case .characterDevice: kind = S_IFCHR
        case .blockDevice: kind = S_IFBLK
        default: kind = S_IFIFO
        }
        if kind != S_IFIFO && !options.allowDeviceNodes {
            note("skipped device node \(header.name) (\(header.devMajor):\(header.devMinor))")
            return
        }
        let device = kind == S_IFIFO ? 0 : Extractor.makeDevice(header.devMajor, header.devMinor)
        try create(display: header.name, parent: parent, leaf: leaf) {
            mknodat(parent, leaf, kind | mode_t(header.mode & 0o777), device)
        }
        try setMetadataByName(parent: parent, leaf: leaf, header: header, chmod: true)
    }

    // MARK: - Metadata

    private func setMetadataByName(parent: Int32, leaf: String, header: TarHeader, chmod: Bool) throws {
        if options.preserveOwnership {
            if fchownat(parent, leaf, uid_t(truncatingIfNeeded: header.uid), gid_t(truncatingIfNeeded: header.gid), AT_SYMLINK_NOFOLLOW) != 0 {
                try ownershipFailed(header)
            }
        }
        if chmod, fchmodat(parent, leaf, mode_t(header.mode & 0o7777), 0) != 0 {
            throw ArchiveError.io("chmod", header.name)
        }
        if !header.xattrs.isEmpty { try setXattrs(header, fd: nil, path: "/proc/self/fd/\(parent)/\(leaf)") }
        var times = Extractor.times(header)
        if utimensat(parent, leaf, &times, AT_SYMLINK_NOFOLLOW) != 0 {
            throw ArchiveError.io("set times of", header.name)
        }
    }

    private func setOwner(fd: Int32, header: TarHeader) throws {
        guard options.preserveOwnership else { return }
        if fchown(fd, uid_t(truncatingIfNeeded: header.uid), gid_t(truncatingIfNeeded: header.gid)) != 0 {
            try ownershipFailed(header)
        }
    }

    private func ownershipFailed(_ header: TarHeader) throws {
        let code = errno
        if code == EPERM || code == EINVAL {  // not privileged / id not mapped in this user namespace
            note("could not set owner \(header.uid):\(header.gid) of \(header.name): errno \(code)")
            return
        }
        throw ArchiveError.io("chown", header.name, code)
    }

    /// Sets SCHILY xattrs via `fd`, or `lsetxattr(path)` for symlinks/devices.
    private func setXattrs(_ header: TarHeader, fd: Int32?, path: String?) throws {
        for key in header.xattrs.keys.sorted() {
            // overlayfs reads its own trusted.overlay.* attributes (opaque, redirect, metacopy) from the layer
            // directories; a layer that could set them could reshape the merged tree.
            if key.utf8.starts(with: "trusted.overlay.".utf8) {
                note("xattr \(key) on \(header.name) ignored: reserved for overlayfs")
                continue
            }
            let value = header.xattrs[key]!
            let rc = value.withUnsafeBytes { buf -> Int32 in
                if let fd { return fsetxattr(fd, key, buf.baseAddress, buf.count, 0) }
                return lsetxattr(path!, key, buf.baseAddress, buf.count, 0)
            }
            if rc == 0 { continue }
            let code = errno
            let privileged = key.hasPrefix("security.") || key.hasPrefix("trusted.")
            if code == ENOTSUP || (privileged && !isRoot && (code == EPERM || code == EACCES))
                || (path != nil && code == EPERM)  // user.* is not allowed on symlinks/devices
            {
                note("xattr \(key) on \(header.name) not applied: \(String(cString: strerror(code)))")
                continue
            }
            throw ArchiveError.io("setxattr \(key) on", header.name, code)
        }
    }

    static func times(_ header: TarHeader) -> [timespec] {
        [
            timespec(tv_sec: 0, tv_nsec: Int((1 << 30) - 2)),  // UTIME_OMIT for atime
            timespec(tv_sec: Int(header.mtime.seconds), tv_nsec: Int(header.mtime.nanoseconds)),
        ]
    }

    static func makeDevice(_ major: UInt32, _ minor: UInt32) -> dev_t {
        let ma = UInt64(major)
        let mi = UInt64(minor)
        return dev_t(((ma & 0xffff_f000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffff_ff00) << 12) | (mi & 0xff))
    }
}
