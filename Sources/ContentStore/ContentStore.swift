#if canImport(Glibc)
import Glibc
#endif
import Blocking
import Foundation
import OCI

/// Blobs by digest in OCI image-layout form (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`), usable by skopeo,
/// umoci and crane as is, and safe for many processes on many machines at once:
/// - a blob becomes visible only after its digest matched (partial file in `ingest/`, fsync, rename);
/// - one process downloads a given blob while the others wait on its lock, then find it present;
/// - `index.json` changes under a lock, written atomically;
/// - pulls hold the store lock shared, `gc` holds it exclusive, so collection never races a pull.
public final class ContentStore: Sendable {
    public let root: String

    /// Store directories that hold image content as files with their image modes (setuid binaries, device nodes,
    /// world-writable files) or a container's writable state: extracted layers, the extractions and partial blobs in
    /// `ingest`, and the run directories (bundles, rootfs mountpoints, overlay upper directories). They are mode
    /// 0700, as containerd keeps its snapshots, so no other user can reach a setuid-root binary or a 0666 device
    /// node of an image through the store. Blobs, the index, SIFs and chunks stay readable: they are the registry's
    /// bytes, not runnable files, and other tools (skopeo, umoci, Apptainer) may read a shared store.
    public static let privateDirectories = ["ingest", "layers", "run"]

    /// Opens the store at `root`, creating it (and its directories) if needed.
    public init(root: String) throws {
        self.root = Self.normalize(root)
        for directory in [self.root, "\(self.root)/blobs/sha256", "\(self.root)/.slipway"] {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw StoreError.io(path: directory, operation: "create directory", errno: Self.posixCode(of: error))
            }
        }
        for name in Self.privateDirectories { try Self.makePrivateDirectory("\(self.root)/\(name)") }
        try Self.makePrivateDirectory("\(self.root)/layers/sha256")
        let layoutFile = "\(self.root)/oci-layout"
        if !FileManager.default.fileExists(atPath: layoutFile) {
            try AtomicFile.write(Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8), to: layoutFile)
        }
        if !FileManager.default.fileExists(atPath: indexPath) {
            try withIndexLock {
                // Checked again under the lock: another node may have written it while we waited.
                if !FileManager.default.fileExists(atPath: indexPath) { try writeIndex(Index(manifests: [])) }
            }
        }
    }

    /// Opens an existing OCI layout for reading without writing anything to it (it may be read-only, or
    /// belong to another tool).
    public init(existingLayoutAt root: String) throws {
        self.root = Self.normalize(root)
        guard FileManager.default.fileExists(atPath: "\(self.root)/index.json") else {
            throw StoreError.notFound("OCI layout at \(self.root) (no index.json)")
        }
    }

    /// Creates `path` mode 0700, or narrows an existing one that we own (a store written by an older Slipway left
    /// these directories 0755). One owned by another user is left as it is: this process may only read that store.
    public static func makePrivateDirectory(_ path: String) throws {
        if mkdir(path, 0o700) == 0 { return }
        let created = errno
        var info = stat()
        guard created == EEXIST, stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
            throw StoreError.io(path: path, operation: "create directory", errno: created)
        }
        guard info.st_uid == geteuid(), info.st_mode & 0o077 != 0 else { return }
        guard chmod(path, 0o700) == 0 else { throw StoreError.io(path: path, operation: "chmod 0700", errno: errno) }
    }

    private static func normalize(_ root: String) -> String {
        root.hasSuffix("/") && root.count > 1 ? String(root.dropLast()) : root
    }

    /// The errno behind a Foundation file error, so messages say "Read-only file system", not "I/O error".
    static func posixCode(of error: any Error) -> Int32 {
        let nsError = error as NSError
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return Int32(underlying.code)
        }
        return nsError.domain == NSPOSIXErrorDomain ? Int32(nsError.code) : EIO
    }

    /// Default location: `$SLIPWAY_STORE`, else `/var/lib/slipway` for root, else `$XDG_CACHE_HOME/slipway`.
    public static var defaultRoot: String {
        let environment = ProcessInfo.processInfo.environment
        if let explicit = environment["SLIPWAY_STORE"], !explicit.isEmpty { return explicit }
        if geteuid() == 0 { return "/var/lib/slipway" }
        let cache = environment["XDG_CACHE_HOME"] ?? "\(environment["HOME"] ?? NSHomeDirectory())/.cache"
        return "\(cache)/slipway"
    }

    var indexPath: String { "\(root)/index.json" }

    public func blobPath(_ digest: Digest) -> String { "\(root)/blobs/\(digest.algorithm.rawValue)/\(digest.hex)" }

    /// Present with the right size (sizes are checked because a blob's name is trusted only with its length).
    public func hasBlob(_ descriptor: Descriptor) -> Bool {
        var info = stat()
        return stat(blobPath(descriptor.digest), &info) == 0 && Int64(info.st_size) == descriptor.size
    }

    // MARK: Ingest

    public enum IngestOutcome: Sendable, Equatable {
        /// Already in the store.
        case present
        /// Another process fetched it while we waited on its lock.
        case fetchedByOther
        /// We fetched `bytes` (fewer than the blob's size when resuming an interrupted download).
        case fetched(bytes: Int64)
    }

    /// Makes the blob present: if absent, takes its ingest lock and runs `fill` to stream bytes into a sink that
    /// resumes any partial file. The blob is committed only when size and digest match.
    public func ingest(
        _ descriptor: Descriptor, onWait: (@Sendable () -> Void)? = nil, fill: (FileBlobSink) async throws -> Void
    ) async throws -> IngestOutcome {
        if hasBlob(descriptor) { return .present }
        try FileManager.default.createDirectory(atPath: "\(root)/blobs/\(descriptor.digest.algorithm.rawValue)", withIntermediateDirectories: true)
        let name = "\(root)/ingest/\(descriptor.digest.algorithm.rawValue)-\(descriptor.digest.hex)"
        var waited = false
        let lock = try await FileLock.acquire("\(name).lock", mode: .exclusive) {
            waited = true
            onWait?()
        }
        defer { lock.release() }
        if hasBlob(descriptor) { return waited ? .fetchedByOther : .present }
        // Reopening a partial file rehashes what it holds, possibly most of a large blob.
        let sink = try await runBlocking { try FileBlobSink(path: "\(name).partial", algorithm: descriptor.digest.algorithm) }
        if sink.count > descriptor.size { try sink.reset() }
        let resumed = sink.count
        try await fill(sink)
        let actual = sink.digest(descriptor.digest.algorithm)
        guard sink.count == descriptor.size, actual == descriptor.digest else {
            let received = sink.count
            try? sink.reset()
            throw StoreError.verification(expected: descriptor.digest, actual: actual, size: received)
        }
        let final = blobPath(descriptor.digest)
        try await runBlocking {
            try sink.sync()
            try AtomicFile.rename(sink.path, to: final)
        }
        return .fetched(bytes: descriptor.size - resumed)
    }

    /// Removes the partial file an ingest left behind (a pull-through cache does not keep half a blob on a full
    /// disk), unless another process is ingesting that blob right now.
    public func discardPartial(_ digest: Digest) {
        let name = "\(root)/ingest/\(digest.algorithm.rawValue)-\(digest.hex)"
        guard let lock = try? FileLock.tryAcquire("\(name).lock", mode: .exclusive) else { return }
        defer { lock.release() }
        unlink("\(name).partial")
    }

    /// Stores small content (manifests, configs) directly, verified against its own digest.
    @discardableResult
    public func writeBlob(_ bytes: [UInt8], mediaType: String, expected: Digest? = nil) throws -> Descriptor {
        var hasher = DigestHasher(expected?.algorithm ?? .sha256)
        hasher.update(bytes)
        let digest = hasher.finalize()
        if let expected, expected != digest { throw StoreError.verification(expected: expected, actual: digest, size: Int64(bytes.count)) }
        let descriptor = Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count))
        if !hasBlob(descriptor) {
            try FileManager.default.createDirectory(atPath: "\(root)/blobs/\(digest.algorithm.rawValue)", withIntermediateDirectories: true)
            try AtomicFile.write(bytes, to: blobPath(digest), mode: 0o644)
        }
        return descriptor
    }

    /// Reads a small blob and checks it still matches its digest (a store on a shared filesystem can be damaged
    /// by others).
    public func readBlob(_ digest: Digest, limit: Int = 64 << 20) throws -> [UInt8] {
        let path = blobPath(digest)
        guard let handle = FileHandle(forReadingAtPath: path) else { throw StoreError.notFound("blob \(digest)") }
        defer { try? handle.close() }
        let data = try handle.read(upToCount: limit + 1) ?? Data()
        guard data.count <= limit else { throw StoreError.corrupt(path: path, reason: "larger than \(limit) bytes") }
        let bytes = [UInt8](data)
        var hasher = DigestHasher(digest.algorithm)
        hasher.update(bytes)
        let actual = hasher.finalize()
        guard actual == digest else { throw StoreError.corrupt(path: path, reason: "content hashes to \(actual)") }
        return bytes
    }

    // MARK: Store-wide lock

    /// Held shared by every operation that adds content, exclusive by `gc`.
    public func lockForWriting() async throws -> FileLock {
        try await FileLock.acquire("\(root)/.slipway/store.lock", mode: .shared)
    }

    func lockForCollection() throws -> FileLock {
        guard let lock = try FileLock.tryAcquire("\(root)/.slipway/store.lock", mode: .exclusive) else {
            throw StoreError.busy("the store is in use by another slipway process (a pull, unpack, conversion or mount); run gc again when it ends")
        }
        return lock
    }
}

extension ContentStore {
    /// A temporary file path inside the store, on the same filesystem as the blobs so `adopt` is a rename.
    public func temporaryPath() -> String {
        "\(root)/ingest/.tmp-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
    }

    /// Moves a file the caller wrote and hashed into place as the blob `descriptor`, after checking its size.
    public func adopt(_ path: String, as descriptor: Descriptor) throws {
        var info = stat()
        guard stat(path, &info) == 0, Int64(info.st_size) == descriptor.size else {
            throw StoreError.corrupt(path: path, reason: "size differs from \(descriptor.size)")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
        try FileManager.default.createDirectory(atPath: "\(root)/blobs/\(descriptor.digest.algorithm.rawValue)", withIntermediateDirectories: true)
        try AtomicFile.rename(path, to: blobPath(descriptor.digest))
    }
}
