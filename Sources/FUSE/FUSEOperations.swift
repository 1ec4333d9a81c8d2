import CFuse3
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// State shared by every callback of one session, reached through the libfuse user-data pointer.
/// `FUSEMount` retains it (`Unmanaged.passRetained`) for the session's lifetime and releases it after
/// `fuse_session_destroy`, when no callback can run any more.
final class SessionContext: Sendable {
    let filesystem: any FUSEFilesystem
    let maxBackground: UInt32
    let lifecycle: SessionLifecycle
    let directories = DirectoryHandles()
    let passthrough: Passthrough

    init(filesystem: any FUSEFilesystem, maxBackground: UInt32, lifecycle: SessionLifecycle, passthrough: Passthrough) {
        self.filesystem = filesystem
        self.maxBackground = maxBackground
        self.lifecycle = lifecycle
        self.passthrough = passthrough
    }
}

/// The callbacks given to libfuse. They live in a nonisolated type (not in top-level code, which is
/// main-actor isolated and traps when libfuse threads call it). Every callback replies exactly once;
/// nothing in here force-unwraps, traps on arithmetic or lets an error escape.
enum FUSEOperations {
    static func make() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { userdata, conn in FUSEOperations.initialize(userdata, conn) }
        ops.lookup = { req, parent, name in FUSEOperations.lookup(req, parent, name) }
        ops.forget = { req, ino, nlookup in FUSEOperations.forget(req, ino, nlookup) }
        ops.forget_multi = { req, count, forgets in FUSEOperations.forgetMulti(req, count, forgets) }
        ops.getattr = { req, ino, _ in FUSEOperations.getattr(req, ino) }
        ops.readlink = { req, ino in FUSEOperations.readlink(req, ino) }
        ops.open = { req, ino, fi in FUSEOperations.open(req, ino, fi) }
        ops.read = { req, ino, size, offset, fi in FUSEOperations.read(req, ino, size, offset, fi) }
        ops.release = { req, ino, fi in FUSEOperations.release(req, ino, fi) }
        ops.opendir = { req, ino, fi in FUSEOperations.opendir(req, ino, fi) }
        ops.readdir = { req, ino, size, offset, fi in FUSEOperations.readdir(req, ino, size, offset, fi, plus: false) }
        // With readdirplus each listed entry comes with its attributes, so the lookups that follow a listing
        // (Python lists every directory on its path, then opens what it found) are answered by the kernel.
        ops.readdirplus = { req, ino, size, offset, fi in FUSEOperations.readdir(req, ino, size, offset, fi, plus: true) }
        ops.releasedir = { req, _, fi in FUSEOperations.releasedir(req, fi) }
        ops.statfs = { req, _ in FUSEOperations.statfs(req) }
        ops.getxattr = { req, ino, name, size in FUSEOperations.getxattr(req, ino, name, size) }
        ops.listxattr = { req, ino, size in FUSEOperations.listxattr(req, ino, size) }
        return ops
    }

    // MARK: Plumbing

    private static func context(_ req: fuse_req_t) -> SessionContext? {
        guard let userdata = fuse_req_userdata(req) else { return nil }
        return Unmanaged<SessionContext>.fromOpaque(userdata).takeUnretainedValue()
    }

    /// Runs `body`, which must reply as its last (non-throwing) step; a thrown error is the reply instead.
    private static func respond(_ req: fuse_req_t?, _ body: (SessionContext, fuse_req_t) throws -> Void) {
        guard let req else { return }
        guard let context = context(req) else {
            fuse_reply_err(req, EIO)
            return
        }
        do {
            try body(context, req)
        } catch {
            fuse_reply_err(req, errnoValue(for: error))
        }
    }

    /// The errno to answer with: a `FUSEError`'s, a `POSIXError`'s code, else `EIO`. libfuse rejects
    /// values outside 1..<1000 (and 0 would be a malformed success), so those become `EIO` too.
    static func errnoValue(for error: any Error) -> Int32 {
        let code: Int32
        switch error {
        case let error as FUSEError: code = error.errno
        case let error as POSIXError: code = error.code.rawValue
        default: code = EIO
        }
        return (1..<1000).contains(code) ? code : EIO
    }

    private static func bytes(_ cString: UnsafePointer<CChar>?) -> [UInt8] {
        guard let cString else { return [] }
        return [UInt8](UnsafeRawBufferPointer(start: cString, count: strlen(cString)))
    }

    private static func entryParameters(_ entry: FUSEEntry) -> fuse_entry_param {
        var parameters = fuse_entry_param()
        parameters.ino = entry.attributes.ino
        parameters.generation = 0
        parameters.attr = entry.attributes.cStat
        parameters.attr_timeout = sanitizedTimeout(entry.attributeTimeout)
        parameters.entry_timeout = sanitizedTimeout(entry.entryTimeout)
        return parameters
    }

    // MARK: Callbacks

    private static func initialize(_ userdata: UnsafeMutableRawPointer?, _ conn: UnsafeMutablePointer<fuse_conn_info>?) {
        guard let userdata else { return }
        let context = Unmanaged<SessionContext>.fromOpaque(userdata).takeUnretainedValue()
        if let conn {
            let cacheSymlinks = UInt32(FUSE_CAP_CACHE_SYMLINKS)
            if conn.pointee.capable & cacheSymlinks != 0 {
                conn.pointee.want |= cacheSymlinks
            }
            if context.maxBackground > 0 {
                // libfuse derives congestion_threshold (3/4 of it) when left at 0.
                conn.pointee.max_background = context.maxBackground
                conn.pointee.congestion_threshold = 0
            }
        }
        context.lifecycle.markInitialized()
    }

    private static func lookup(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        respond(req) { context, req in
            let entry: FUSEEntry
            do {
                entry = try context.filesystem.lookup(parent: parent, name: bytes(name))
            } catch where errnoValue(for: error) == ENOENT && context.filesystem.negativeEntryTimeout > 0 {
                // ino 0 is a negative entry: the caller gets ENOENT and the kernel caches the miss.
                var negative = fuse_entry_param()
                negative.ino = 0
                negative.entry_timeout = sanitizedTimeout(context.filesystem.negativeEntryTimeout)
                fuse_reply_entry(req, &negative)
                return
            }
            var parameters = entryParameters(entry)
            fuse_reply_entry(req, &parameters)
        }
    }

    private static func forget(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ nlookup: UInt64) {
        guard let req else { return }
        context(req)?.filesystem.forget(ino, nlookup: nlookup)
        fuse_reply_none(req)
    }

    private static func forgetMulti(_ req: fuse_req_t?, _ count: Int, _ forgets: UnsafeMutablePointer<fuse_forget_data>?) {
        guard let req else { return }
        if let context = context(req), let forgets, count > 0 {
            for item in UnsafeBufferPointer(start: forgets, count: count) {
                context.filesystem.forget(item.ino, nlookup: item.nlookup)
            }
        }
        fuse_reply_none(req)
    }

    private static func getattr(_ req: fuse_req_t?, _ ino: fuse_ino_t) {
        respond(req) { context, req in
            var st = try context.filesystem.getattr(ino).cStat
            fuse_reply_attr(req, &st, sanitizedTimeout(context.filesystem.attributeTimeout))
        }
    }

    private static func readlink(_ req: fuse_req_t?, _ ino: fuse_ino_t) {
        respond(req) { context, req in
            var target = try context.filesystem.readlink(ino).map { CChar(bitPattern: $0) }
            target.append(0)
            target.withUnsafeBufferPointer { _ = fuse_reply_readlink(req, $0.baseAddress) }
        }
    }

    private static func open(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        respond(req) { context, req in
            guard let fi else { throw FUSEError.io }
            let fh = try context.filesystem.open(ino, flags: cfuse_file_info_flags(fi))
            let passthrough = context.passthrough
            if passthrough.isActive {
                let file = passthrough.allowsPassthrough(ino) ? context.filesystem.passthroughFile(ino) : nil
                if let handle = passthrough.open(ino, filesystemHandle: fh, file: file) {
                    // The kernel reads this file from its local copy; the reply names it (`Passthrough.sending`).
                    cfuse_file_info_set(fi, handle, 0, 0)
                    if fuse_reply_open(req, fi) != 0 {
                        _ = passthrough.release(handle, ino: ino)
                        context.filesystem.release(ino, fh: fh)
                    }
                    return
                }
            }
            cfuse_file_info_set(fi, fh, 1, 0)
            if fuse_reply_open(req, fi) != 0 {
                // The open was interrupted: the kernel will never send a release for this handle.
                if passthrough.isActive { _ = passthrough.release(fh, ino: ino) }
                context.filesystem.release(ino, fh: fh)
            }
        }
    }

    private static func read(
        _ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>?
    ) {
        respond(req) { context, req in
            guard size >= 0, offset >= 0 else { throw FUSEError.invalidArgument }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(size, 1), alignment: 64)
            defer { buffer.deallocate() }
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size])
            let count = try context.filesystem.read(ino, fh: cfuse_file_info_fh(fi), offset: Int64(offset), into: target)
            guard count >= 0, count <= size else { throw FUSEError.io }
            // fuse_reply_buf writes to /dev/fuse synchronously, so the buffer may go right after it.
            fuse_reply_buf(req, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), count)
        }
    }

    private static func release(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        respond(req) { context, req in
            var fh = cfuse_file_info_fh(fi)
            if context.passthrough.isActive { fh = context.passthrough.release(fh, ino: ino) }
            context.filesystem.release(ino, fh: fh)
            fuse_reply_err(req, 0)
        }
    }

    private static func opendir(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        respond(req) { context, req in
            guard let fi else { throw FUSEError.io }
            let fh = context.directories.open(ino)
            // cache_readdir lets the kernel keep the listing; keep_cache keeps it across opendirs.
            cfuse_file_info_set(fi, fh, 1, 1)
            if fuse_reply_open(req, fi) != 0 {
                context.directories.close(fh)
            }
        }
    }

    private static func readdir(
        _ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>?, plus: Bool
    ) {
        respond(req) { context, req in
            guard let handle = context.directories.handle(cfuse_file_info_fh(fi)) else { throw FUSEError.badFileHandle }
            guard size >= 0, offset >= 0 else { throw FUSEError.invalidArgument }
            let entries = try handle.entries(of: context.filesystem)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(size, 1), alignment: 64)
            defer { buffer.deallocate() }
            guard let base = buffer.baseAddress?.assumingMemoryBound(to: CChar.self) else { throw FUSEError.outOfMemory }
            // The offset of an entry is its index in `entries` plus one ("where to continue"); 0 is the start.
            var used = 0
            var index = offset < entries.count ? Int(offset) : entries.count
            var st = stat()
            while index < entries.count {
                let entry = entries[index]
                st.st_ino = .init(truncatingIfNeeded: entry.ino)
                st.st_mode = .init(truncatingIfNeeded: entry.mode)
                let remaining = size - used
                let needed: Int
                if plus {
                    // The kernel takes a lookup reference for every entry but `.` and `..`, as for a lookup.
                    var parameters = fuse_entry_param()
                    if index >= 2 {
                        guard let child = try? context.filesystem.lookup(parent: ino, name: entry.name.dropLast().map { UInt8(bitPattern: $0) })
                        else {
                            index += 1
                            continue
                        }
                        parameters = entryParameters(child)
                    } else {
                        parameters.attr = st
                    }
                    needed = entry.name.withUnsafeBufferPointer { name in
                        fuse_add_direntry_plus(req, base + used, remaining, name.baseAddress, &parameters, off_t(index + 1))
                    }
                    if needed > remaining, index >= 2 {
                        // Not sent: give back the reference the lookup counted.
                        context.filesystem.forget(parameters.ino, nlookup: 1)
                    }
                } else {
                    needed = entry.name.withUnsafeBufferPointer { name in
                        fuse_add_direntry(req, base + used, remaining, name.baseAddress, &st, off_t(index + 1))
                    }
                }
                guard needed <= remaining else { break }
                used += needed
                index += 1
            }
            fuse_reply_buf(req, base, used)
        }
    }

    private static func releasedir(_ req: fuse_req_t?, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        respond(req) { context, req in
            context.directories.close(cfuse_file_info_fh(fi))
            fuse_reply_err(req, 0)
        }
    }

    private static func statfs(_ req: fuse_req_t?) {
        respond(req) { context, req in
            var st = try context.filesystem.statfs().cStatvfs
            fuse_reply_statfs(req, &st)
        }
    }

    private static func getxattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ size: Int) {
        respond(req) { context, req in
            let value = try context.filesystem.getxattr(ino, name: bytes(name))
            try replyXattr(req, value, size)
        }
    }

    private static func listxattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int) {
        respond(req) { context, req in
            var list: [UInt8] = []
            for name in try context.filesystem.listxattr(ino) where !name.isEmpty && !name.contains(0) {
                list += name
                list.append(0)
            }
            try replyXattr(req, list, size)
        }
    }

    /// Size 0 is a probe for the needed size; a positive size smaller than the value is `ERANGE`.
    private static func replyXattr(_ req: fuse_req_t, _ value: [UInt8], _ size: Int) throws {
        if size == 0 {
            fuse_reply_xattr(req, value.count)
        } else if value.count > size {
            throw FUSEError.range
        } else {
            value.withUnsafeBytes { bytes in
                _ = fuse_reply_buf(req, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
            }
        }
    }
}

// MARK: - Directory handles

/// Open directories by handle. A handle's listing is taken once (on its first readdir) and paged
/// from there, so offsets stay valid for the handle's lifetime whatever the filesystem does.
final class DirectoryHandles: Sendable {
    private let state = Mutex<(next: UInt64, open: [UInt64: DirectoryHandle])>((next: 1, open: [:]))

    func open(_ ino: UInt64) -> UInt64 {
        state.withLock { state in
            let fh = state.next
            state.next &+= 1
            state.open[fh] = DirectoryHandle(ino: ino)
            return fh
        }
    }

    func handle(_ fh: UInt64) -> DirectoryHandle? {
        state.withLock { $0.open[fh] }
    }

    func close(_ fh: UInt64) {
        _ = state.withLock { $0.open.removeValue(forKey: fh) }
    }
}

final class DirectoryHandle: Sendable {
    struct Entry: Sendable {
        /// NUL-terminated.
        var name: [CChar]
        var ino: UInt64
        var mode: UInt32
    }

    let ino: UInt64
    private let listing = Mutex<[Entry]?>(nil)

    init(ino: UInt64) {
        self.ino = ino
    }

    /// `.`, `..`, then the filesystem's valid children.
    func entries(of filesystem: any FUSEFilesystem) throws -> [Entry] {
        try listing.withLock { listing in
            if let listing { return listing }
            let directoryMode: UInt32 = 0o040000
            var parent = ino
            var entries = [
                Entry(name: [46, 0], ino: ino, mode: directoryMode),
                Entry(name: [46, 46, 0], ino: ino, mode: directoryMode),
            ]
            for child in try filesystem.readdir(ino) {
                let name = child.name
                if name == [46, 46] {
                    parent = child.ino
                    continue
                }
                // The kernel fails a whole getdents with EIO on a name it rejects, so skip those here.
                guard !name.isEmpty, name.count <= 1024, name != [46], !name.contains(0), !name.contains(47) else {
                    continue
                }
                entries.append(Entry(name: name.map { CChar(bitPattern: $0) } + [0], ino: child.ino, mode: child.mode))
            }
            entries[1].ino = parent
            listing = entries
            return entries
        }
    }
}
