import CFuse3
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// FUSE passthrough (Linux 6.9+, `CONFIG_FUSE_PASSTHROUGH`): an opened file whose whole content is one local file
/// is read by the kernel straight from that file, with no request to this process, as fast as a local file.
///
/// libfuse 3.14 predates it, so the binding speaks that part of the protocol itself, through libfuse's custom I/O
/// hooks (`fuse_session_custom_io`): the read hook notes whether the kernel's INIT offers passthrough and which
/// requests are OPENs; the writev hook adds the passthrough flag and a stack depth of 1 to libfuse's INIT reply,
/// and the passthrough flag and backing id to the replies of opens that chose a backing file. Registering a
/// backing file needs CAP_SYS_ADMIN; without it, or on an older kernel, every open is served as before.
///
/// The kernel refuses an inode open in both modes at once, so an inode with an open served through this process
/// is not passed through until that open is released, and the other way round; and it gives an inode one backing
/// file, so the opens of an inode share one registration, dropped with the last of them.
final class Passthrough: Sendable {
    private struct State {
        /// /dev/fuse, for the backing-file ioctls.
        var device: Int32 = -1
        var initUnique: UInt64?
        var offered = false
        var active = false
        var openUniques: Set<UInt64> = []
        /// Backing ids by inode, while the inode has passed-through opens: the kernel gives an inode one backing
        /// file (a second open with another id fails), and looks the id up when the opener processes the reply,
        /// after the write that sent it.
        var backing: [UInt64: Int32] = [:]
        /// The inode and the filesystem's own handle behind each passed-through handle.
        var handles: [UInt64: (ino: UInt64, filesystemHandle: UInt64)] = [:]
        var nextHandle: UInt64 = 1 << 62
        /// Open handles per inode: passed through, or served through this process.
        var passedThrough: [UInt64: Int] = [:]
        var served: [UInt64: Int] = [:]
    }

    private let state = Mutex(State())
    private let opened = Atomic<Int>(0)
    let wanted: Bool

    var opens: Int { opened.load(ordering: .relaxed) }

    init(wanted: Bool) {
        self.wanted = wanted
    }

    var isActive: Bool { state.withLock { $0.active } }

    func attach(device: Int32) {
        state.withLock { $0.device = device }
    }

    /// Registers `file` (an open descriptor of the content, which this closes; nil when there is none) for an open
    /// of `ino` whose filesystem handle is `filesystemHandle`, and returns the handle the open replies with, or nil
    /// when the open must be served through this process. Call only once `isActive`.
    func open(_ ino: UInt64, filesystemHandle: UInt64, file: Int32?) -> UInt64? {
        defer { if let file { close(file) } }
        return state.withLock { s -> UInt64? in
            // An inode already passed through stays so for every open (the kernel refuses to mix), whatever this
            // open's own file: its registered backing file holds the content.
            guard s.active, s.served[ino, default: 0] == 0, s.device >= 0,
                let id = s.backing[ino] ?? file.map({ cfuse_backing_open(s.device, $0) })
            else {
                s.served[ino, default: 0] += 1
                return nil
            }
            guard id > 0 else {
                s.served[ino, default: 0] += 1
                return nil
            }
            let handle = s.nextHandle
            s.nextHandle &+= 1
            s.backing[ino] = id
            s.handles[handle] = (ino, filesystemHandle)
            s.passedThrough[ino, default: 0] += 1
            return handle
        }
    }

    /// Whether an open of `ino` could be passed through: no open of it is served through this process.
    func allowsPassthrough(_ ino: UInt64) -> Bool {
        state.withLock { $0.active && $0.served[ino, default: 0] == 0 }
    }

    /// Forgets an open (and its backing file's registration with the inode's last), also one whose reply failed;
    /// returns the filesystem's handle behind it (`handle` itself for one served here).
    func release(_ handle: UInt64, ino: UInt64) -> UInt64 {
        state.withLock { s in
            guard let passed = s.handles.removeValue(forKey: handle) else {
                if s.active, let count = s.served[ino] { s.served[ino] = count > 1 ? count - 1 : nil }
                return handle
            }
            let count = s.passedThrough[passed.ino, default: 0]
            if count > 1 {
                s.passedThrough[passed.ino] = count - 1
            } else {
                s.passedThrough[passed.ino] = nil
                if let id = s.backing.removeValue(forKey: passed.ino) { _ = cfuse_backing_close(s.device, id) }
            }
            return passed.filesystemHandle
        }
    }

    // MARK: The protocol

    private static let inHeaderSize = 40
    private static let outHeaderSize = 16

    /// Notes an INIT's offer and the OPEN requests (`bytes` is one request as read from /dev/fuse).
    func received(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= Self.inHeaderSize else { return }
        let opcode = bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        let unique = bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        switch Int32(opcode) {
        case CFUSE_OPCODE_INIT where bytes.count >= Self.inHeaderSize + 20:
            let flags = bytes.loadUnaligned(fromByteOffset: Self.inHeaderSize + 12, as: UInt32.self)
            let flags2 = bytes.loadUnaligned(fromByteOffset: Self.inHeaderSize + 16, as: UInt32.self)
            let offered = wanted && flags & CFUSE_INIT_EXT != 0 && flags2 & CFUSE_INIT2_PASSTHROUGH != 0
            state.withLock { s in
                s.initUnique = unique
                s.offered = offered
            }
        case CFUSE_OPCODE_OPEN:
            state.withLock { s in if s.active { s.openUniques.insert(unique) } }
        default:
            break
        }
    }

    /// Amends a reply before it is written: INIT asks for passthrough, an OPEN that chose a backing file names it.
    func sending(_ iov: UnsafeMutableBufferPointer<iovec>) {
        guard iov.count >= 1, iov[0].iov_len >= Self.outHeaderSize, let header = iov[0].iov_base else { return }
        let error = header.loadUnaligned(fromByteOffset: 4, as: Int32.self)
        let unique = header.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        // An error reply is the header alone.
        let body = iov.count >= 2 ? iov[1].iov_base : nil
        let bodyLength = iov.count >= 2 ? iov[1].iov_len : 0
        state.withLock { s in
            if unique == s.initUnique {
                s.initUnique = nil
                // flags at 12, flags2 at 32, max_stack_depth at 36 of fuse_init_out (which libfuse sends whole).
                guard s.offered, error == 0, let body, bodyLength >= 40 else { return }
                let flags = body.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
                let flags2 = body.loadUnaligned(fromByteOffset: 32, as: UInt32.self)
                body.storeBytes(of: flags | CFUSE_INIT_EXT, toByteOffset: 12, as: UInt32.self)
                body.storeBytes(of: flags2 | CFUSE_INIT2_PASSTHROUGH, toByteOffset: 32, as: UInt32.self)
                body.storeBytes(of: UInt32(1), toByteOffset: 36, as: UInt32.self)
                s.active = true
                return
            }
            guard s.openUniques.remove(unique) != nil, error == 0, let body, bodyLength >= 16 else { return }
            // fuse_open_out: fh at 0, open_flags at 8, backing_id at 12.
            let handle = body.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
            guard let ino = s.handles[handle]?.ino, let id = s.backing[ino] else { return }
            var flags = body.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
            flags = (flags & ~CFUSE_FOPEN_KEEP_CACHE) | CFUSE_FOPEN_PASSTHROUGH
            body.storeBytes(of: flags, toByteOffset: 8, as: UInt32.self)
            body.storeBytes(of: id, toByteOffset: 12, as: Int32.self)
            opened.add(1, ordering: .relaxed)
        }
    }

    /// libfuse's I/O through the hooks above; `userdata` is the session's `SessionContext`.
    static func customIO() -> fuse_custom_io {
        var io = fuse_custom_io()
        io.read = { fd, buffer, length, userdata in
            let count = read(fd, buffer, length)
            if count > 0, let buffer, let userdata {
                let saved = errno
                Unmanaged<SessionContext>.fromOpaque(userdata).takeUnretainedValue().passthrough
                    .received(UnsafeRawBufferPointer(start: buffer, count: count))
                errno = saved
            }
            return count
        }
        io.writev = { fd, iov, count, userdata in
            guard let iov, count > 0, let userdata else { return writev(fd, iov, count) }
            Unmanaged<SessionContext>.fromOpaque(userdata).takeUnretainedValue().passthrough
                .sending(UnsafeMutableBufferPointer(start: iov, count: Int(count)))
            return writev(fd, iov, count)
        }
        return io
    }
}
