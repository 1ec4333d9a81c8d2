import CFuse3
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Mounts a `FUSEFilesystem` and serves it with libfuse's multi-threaded session loop.
///
/// ```swift
/// let mount = FUSEMount(filesystem: fs, mountpoint: "/mnt/image",
///                       options: ["ro", "default_permissions", "allow_other", "fsname=slipway", "subtype=slipway"])
/// try mount.start()            // returns once the kernel has connected
/// ...
/// try mount.unmount()          // ends the session; idempotent
/// mount.waitUntilUnmounted()   // the loop has returned and everything is released
/// ```
///
/// The session loop runs on a dedicated thread; libfuse starts up to `maxThreads` worker threads that
/// call the filesystem. The loop ends when the filesystem is unmounted (by `unmount()`, `umount`,
/// `fusermount3 -u`) or the connection is aborted; the session is then destroyed and, if the kernel
/// left a dead mount behind (`ENOTCONN`), it is detached. Dropping a running `FUSEMount` unmounts it.
public final class FUSEMount: Sendable {
    /// The inode number of the root directory (`FUSE_ROOT_ID`).
    public static let rootInode: UInt64 = 1

    public let mountpoint: String
    /// Each element is passed to libfuse as `-o <option>` (e.g. `ro`, `default_permissions`, `fsname=x`).
    /// `allow_other` lets other users (and root-mounted overlays) in; as non-root it needs
    /// `user_allow_other` in /etc/fuse.conf.
    public let options: [String]
    /// The most libfuse worker threads, i.e. filesystem calls in flight.
    public let maxThreads: Int
    /// The kernel's limit of asynchronous (readahead) requests in flight; 0 keeps the kernel default (12).
    public let maxBackground: Int
    /// How long `start()` waits for the kernel to connect.
    public let startTimeout: Double

    private let filesystem: any FUSEFilesystem
    private let lifecycle = SessionLifecycle()
    /// Let the kernel read files the filesystem has locally straight from them (`FUSEFilesystem.passthroughFile`).
    public let passthrough: Bool
    private let passthroughState: Passthrough

    /// Opens the kernel reads straight from a local file, since the mount started.
    public var passthroughOpens: Int { passthroughState.opens }

    /// - Parameters:
    ///   - options: mount options, each passed as `-o <option>`. libfuse rejects unknown ones (`start()` throws).
    ///   - maxThreads: worker threads (1...1000; libfuse's own default is 10).
    ///   - maxBackground: see `maxBackground`; defaults to `maxThreads` so readahead can use every worker.
    public init(
        filesystem: any FUSEFilesystem,
        mountpoint: String,
        options: [String] = ["ro", "default_permissions"],
        maxThreads: Int = 16,
        maxBackground: Int? = nil,
        startTimeout: Double = 30,
        passthrough: Bool = false
    ) {
        self.passthrough = passthrough
        self.passthroughState = Passthrough(wanted: passthrough)
        self.filesystem = filesystem
        self.mountpoint = mountpoint
        self.options = options
        self.maxThreads = min(max(maxThreads, 1), 1000)
        self.maxBackground = min(max(maxBackground ?? self.maxThreads, 0), 65535)
        self.startTimeout = startTimeout
    }

    deinit {
        try? unmount()
    }

    /// True from a successful `start()` until the session loop has returned.
    public var isRunning: Bool {
        lifecycle.isRunning
    }

    /// Mounts the filesystem, starts the session loop on its own thread and returns once the kernel has
    /// connected (the FUSE `INIT` handshake is done), so the mount is live. Throws if it is already
    /// started, libfuse rejects the options, the mount fails, or the kernel does not connect within
    /// `startTimeout` seconds (the mount is then removed again).
    public func start() throws {
        try lifecycle.beginStart()
        let resources: SessionResources
        do {
            resources = try SessionResources(
                filesystem: filesystem, options: options, maxBackground: UInt32(maxBackground), lifecycle: lifecycle,
                passthrough: passthroughState
            )
        } catch {
            lifecycle.endStart(mounted: false)
            throw error
        }
        guard fuse_session_mount(resources.session, mountpoint) == 0 else {
            let code = errno
            resources.destroy()
            lifecycle.endStart(mounted: false)
            throw FUSEMountError("cannot mount a FUSE filesystem on \(mountpoint)", errno: code == 0 ? nil : code)
        }
        lifecycle.endStart(mounted: true, session: resources.session)
        if passthrough { resources.interceptForPassthrough() }

        let thread = Thread { [lifecycle, mountpoint, maxThreads] in
            let result = cfuse_session_loop_mt(resources.session, UInt32(maxThreads))
            let abandoned = lifecycle.detachSession()
            if !abandoned {
                // Unmounts unless the kernel already did (unmount or aborted connection); closes /dev/fuse.
                fuse_session_unmount(resources.session)
            }
            resources.destroy()
            if !abandoned {
                FUSEMount.detachIfDead(mountpoint)
            }
            lifecycle.markFinished(result: result)
        }
        thread.name = "fuse-session"
        thread.start()

        switch lifecycle.waitForConnection(timeout: startTimeout) {
        case .connected:
            return
        case .ended(let result):
            throw FUSEMountError(
                "the FUSE session on \(mountpoint) ended before the kernel connected", errno: result < 0 ? -result : nil
            )
        case .timedOut:
            try? unmount()
            throw FUSEMountError("the kernel did not connect to the FUSE session on \(mountpoint) within \(startTimeout) s")
        }
    }

    /// Unmounts the filesystem, which ends the session loop. If the mount is busy (open files, a process
    /// inside) it is detached instead (`MNT_DETACH` / `fusermount3 -u -z`): it disappears from the
    /// namespace at once and the session keeps serving the open files until the last one is closed.
    /// Idempotent: does nothing if the session is not running or an unmount already succeeded.
    /// Returns without waiting for the loop; use `waitUntilUnmounted()` for that. Safe to call from a
    /// filesystem callback.
    public func unmount() throws {
        guard lifecycle.beginUnmount() else { return }
        do {
            try FUSEMount.unmount(mountpoint)
        } catch {
            lifecycle.cancelUnmount()
            throw error
        }
    }

    /// Blocks until the session loop has returned and the session is destroyed (returns at once if the
    /// mount was never started). Never call it from a filesystem callback.
    public func waitUntilUnmounted() {
        lifecycle.waitUntilFinished()
    }

    /// Removes a mount whose daemon died ("Transport endpoint is not connected"), or any other mount at
    /// `path`, lazily: `umount2(MNT_DETACH)` as root, `fusermount3 -u -z` otherwise. As root, a path that
    /// is not a mount point is left alone without error.
    public static func forceUnmount(_ path: String) throws {
        if geteuid() == 0 {
            if cfuse_umount_detach(path) == 0 { return }
            let code = errno
            if code == EINVAL { return }
            throw FUSEMountError("cannot detach the mount at \(path)", errno: code)
        }
        try runFusermount(["-u", "-z", "--", path])
    }

    // MARK: Testing

    /// Ends the session loop and closes `/dev/fuse` without unmounting, like a daemon that was killed:
    /// the mount stays as "Transport endpoint is not connected". For tests of `forceUnmount`.
    func simulateDaemonDeath() {
        guard lifecycle.abandon() else { return }
        // The loop only notices the exit flag after a worker has handled one more request.
        var st = stat()
        _ = stat(mountpoint + "/.slipway-fuse-wake-" + UUID().uuidString, &st)
        lifecycle.waitUntilFinished()
    }

    // MARK: Unmounting

    private static func unmount(_ path: String) throws {
        if geteuid() == 0 {
            if cfuse_umount(path) == 0 { return }
            var code = errno
            if code == EBUSY {
                if cfuse_umount_detach(path) == 0 { return }
                code = errno
            }
            // EINVAL: no longer a mount point (someone unmounted it); the loop ends by itself.
            if code == EINVAL { return }
            throw FUSEMountError("cannot unmount \(path)", errno: code)
        }
        do {
            try runFusermount(["-u", "--", path])
        } catch {
            try runFusermount(["-u", "-z", "--", path])
        }
    }

    /// After the loop ended without an unmount (aborted connection), the kernel keeps a dead mount.
    private static func detachIfDead(_ path: String) {
        var st = stat()
        if stat(path, &st) != 0 && errno == ENOTCONN {
            try? forceUnmount(path)
        }
    }

    private static func runFusermount(_ arguments: [String]) throws {
        let candidates = ["/usr/bin/fusermount3", "/bin/fusermount3"]
            + (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/fusermount3" }
        guard let executable = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw FUSEMountError("fusermount3 not found (install the fuse3 package)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let errorPipe = Pipe()
        process.standardError = errorPipe
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let message = errorPipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let text = String(decoding: message, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw FUSEMountError("fusermount3 \(arguments.joined(separator: " ")) failed: \(text)")
        }
    }
}

// MARK: - Session resources

/// What one libfuse session owns: the argument vector (it must outlive the session), the session, and
/// the retained `SessionContext` passed as user data. Released exactly once by `destroy()`, after the
/// loop has returned (or when mounting failed), so no callback can still see the context.
private final class SessionResources: @unchecked Sendable {
    let session: OpaquePointer
    private let arguments: UnsafeMutablePointer<fuse_args>
    private let argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>
    private let argc: Int
    private let context: Unmanaged<SessionContext>
    private var destroyed = false

    init(filesystem: any FUSEFilesystem, options: [String], maxBackground: UInt32, lifecycle: SessionLifecycle, passthrough: Passthrough) throws {
        // argv[0] is the program name; libfuse skips it.
        let strings = ["slipway"] + options.flatMap { ["-o", $0] }
        argc = strings.count
        argv = .allocate(capacity: strings.count + 1)
        for (index, string) in strings.enumerated() {
            argv[index] = strdup(string)
        }
        argv[strings.count] = nil
        arguments = .allocate(capacity: 1)
        arguments.initialize(to: fuse_args(argc: Int32(strings.count), argv: argv, allocated: 0))

        context = Unmanaged.passRetained(
            SessionContext(filesystem: filesystem, maxBackground: maxBackground, lifecycle: lifecycle, passthrough: passthrough)
        )
        var operations = FUSEOperations.make()
        guard
            let session = fuse_session_new(
                arguments, &operations, MemoryLayout<fuse_lowlevel_ops>.size, context.toOpaque()
            )
        else {
            Self.release(arguments: arguments, argv: argv, argc: argc, context: context)
            throw FUSEMountError("libfuse rejected the mount options \(options) (see stderr)")
        }
        self.session = session
    }

    /// Routes the session's /dev/fuse traffic through `Passthrough`'s hooks (before the loop reads the INIT).
    func interceptForPassthrough() {
        let device = fuse_session_fd(session)
        var io = Passthrough.customIO()
        guard device >= 0, fuse_session_custom_io(session, &io, device) == 0 else { return }
        context.takeUnretainedValue().passthrough.attach(device: device)
    }

    func destroy() {
        guard !destroyed else { return }
        destroyed = true
        fuse_session_destroy(session)
        Self.release(arguments: arguments, argv: argv, argc: argc, context: context)
    }

    private static func release(
        arguments: UnsafeMutablePointer<fuse_args>, argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>, argc: Int,
        context: Unmanaged<SessionContext>
    ) {
        // libfuse may have replaced the vector with its own allocated copy; that one it frees itself.
        fuse_opt_free_args(arguments)
        arguments.deallocate()
        for index in 0..<argc {
            free(argv[index])
        }
        argv.deallocate()
        context.release()
    }
}

// MARK: - Lifecycle

/// The state of one `FUSEMount`, shared with the session thread and the `init` callback.
final class SessionLifecycle: @unchecked Sendable {
    enum Phase {
        case idle, starting, running, unmounting, finished
    }

    enum ConnectionOutcome {
        case connected
        case ended(Int32)
        case timedOut
    }

    private let condition = NSCondition()
    private var phase = Phase.idle
    private var connected = false
    private var abandoned = false
    private var session: OpaquePointer?
    private var result: Int32 = 0

    var isRunning: Bool {
        locked { phase == .running || phase == .unmounting }
    }

    func beginStart() throws {
        try locked {
            guard phase == .idle else { throw FUSEMountError("the FUSE mount was already started") }
            phase = .starting
        }
    }

    func endStart(mounted: Bool, session: OpaquePointer? = nil) {
        locked {
            phase = mounted ? .running : .idle
            self.session = session
            condition.broadcast()
        }
    }

    /// Called by the `init` callback on a libfuse worker.
    func markInitialized() {
        locked {
            connected = true
            condition.broadcast()
        }
    }

    func waitForConnection(timeout: Double) -> ConnectionOutcome {
        let deadline = Date(timeIntervalSinceNow: max(timeout, 0))
        return locked {
            while true {
                if connected { return .connected }
                if phase == .finished { return .ended(result) }
                if !condition.wait(until: deadline) {
                    return connected ? .connected : (phase == .finished ? .ended(result) : .timedOut)
                }
            }
        }
    }

    func beginUnmount() -> Bool {
        locked {
            guard phase == .running else { return false }
            phase = .unmounting
            return true
        }
    }

    func cancelUnmount() {
        locked {
            if phase == .unmounting { phase = .running }
        }
    }

    /// Marks the session as abandoned and tells libfuse to exit; false if no session is running.
    func abandon() -> Bool {
        locked {
            guard let session, phase == .running || phase == .unmounting else { return false }
            abandoned = true
            fuse_session_exit(session)
            return true
        }
    }

    /// The loop has returned: forget the session pointer (it is about to be destroyed). Returns whether
    /// the session was abandoned.
    func detachSession() -> Bool {
        locked {
            session = nil
            return abandoned
        }
    }

    func markFinished(result: Int32) {
        locked {
            self.result = result
            phase = .finished
            condition.broadcast()
        }
    }

    func waitUntilFinished() {
        locked {
            while phase == .starting || phase == .running || phase == .unmounting {
                condition.wait()
            }
        }
    }

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        condition.lock()
        defer { condition.unlock() }
        return try body()
    }
}
