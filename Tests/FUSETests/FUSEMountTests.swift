import CLinux
import Foundation
import Synchronization
import Testing
import TestSupport

@testable import FUSE

#if canImport(Glibc)
import Glibc
#endif

/// Mounting needs a readable and writable /dev/fuse (root, or a 0666 device node).
let fuseUsable = access("/dev/fuse", R_OK | W_OK) == 0
let skipReason: Comment = "/dev/fuse is missing or not accessible to this user, so nothing can be mounted"

@Suite(.tags(.integration), .enabled(if: fuseUsable, skipReason))
struct FUSEMountTests {
    static let options = ["ro", "default_permissions", "allow_other", "fsname=slipway-test", "subtype=slipway"]

    // MARK: Helpers

    /// Mounts a fresh `MemoryFilesystem` on a new temporary directory, runs `body`, unmounts and removes
    /// the directory (also when `body` throws).
    func withMount(
        negativeEntryTimeout: Double = 0, _ body: (_ root: String, _ fs: MemoryFilesystem, _ mount: FUSEMount) throws -> Void
    ) throws {
        let root = try makeTemporaryDirectory()
        let fs = MemoryFilesystem(negativeEntryTimeout: negativeEntryTimeout)
        let mount = FUSEMount(filesystem: fs, mountpoint: root, options: Self.options)
        defer {
            try? mount.unmount()
            mount.waitUntilUnmounted()
            try? FUSEMount.forceUnmount(root)
            rmdir(root)
        }
        try mount.start()
        try body(root, fs, mount)
    }

    func makeTemporaryDirectory() throws -> String {
        var template = Array("/tmp/slipway-fuse-test-XXXXXX".utf8CString)
        guard let path = mkdtemp(&template) else { throw FUSEError(errno) }
        return String(cString: path)
    }

    /// `stat`, or the errno it failed with.
    func statResult(_ path: String, follow: Bool = true) -> Result<stat, FUSEError> {
        var st = stat()
        let result = follow ? stat(path, &st) : lstat(path, &st)
        return result == 0 ? .success(st) : .failure(FUSEError(errno))
    }

    func errnoOfStat(_ path: String) -> Int32 {
        if case .failure(let error) = statResult(path) { return error.errno }
        return 0
    }

    func readFile(_ path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw FUSEError(errno) }
        defer { close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            guard count >= 0 else { throw FUSEError(errno) }
            if count == 0 { return result }
            result += chunk[0..<count]
        }
    }

    func preadFile(_ fd: Int32, offset: Int, count: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) }
            guard n >= 0 else { throw FUSEError(errno) }
            if n == 0 { break }
            done += n
        }
        return Array(buffer[0..<done])
    }

    struct DirectoryEntry: Equatable {
        var name: String
        var ino: UInt64
        var type: UInt8
    }

    func listDirectory(_ path: String) throws -> [DirectoryEntry] {
        guard let directory = opendir(path) else { throw FUSEError(errno) }
        defer { closedir(directory) }
        var entries: [DirectoryEntry] = []
        errno = 0
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { bytes in
                String(decoding: bytes.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            entries.append(DirectoryEntry(name: name, ino: UInt64(entry.pointee.d_ino), type: entry.pointee.d_type))
        }
        guard errno == 0 else { throw FUSEError(errno) }
        return entries
    }

    func sameBytes(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        guard !a.isEmpty else { return true }
        return a.withUnsafeBytes { x in b.withUnsafeBytes { y in memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 } }
    }

    // MARK: Tests

    @Test func listsDirectories() throws {
        try withMount { root, _, _ in
            let entries = try listDirectory(root)
            #expect(entries.map(\.name).sorted() == [
                ".", "..", "big.bin", "broken", "dir", "hard1", "hard2", "link", "many", "slow.bin", "small.txt", "xattr.txt",
            ])
            #expect(entries.first { $0.name == "." }?.ino == 1)
            #expect(entries.first { $0.name == "dir" } == DirectoryEntry(name: "dir", ino: 2, type: UInt8(DT_DIR)))
            #expect(entries.first { $0.name == "small.txt" } == DirectoryEntry(name: "small.txt", ino: 3, type: UInt8(DT_REG)))
            #expect(entries.first { $0.name == "link" } == DirectoryEntry(name: "link", ino: 5, type: UInt8(DT_LNK)))
            #expect(entries.filter { $0.ino == 6 }.count == 2)

            let nested = try listDirectory(root + "/dir")
            #expect(nested.map(\.name).sorted() == [".", "..", "nested.txt"])
            #expect(nested.first { $0.name == "." }?.ino == 2)

            // 2000 long names need many readdir pages; every name must come exactly once, in order.
            let many = try listDirectory(root + "/many")
            let expected = [".", ".."] + (0..<MemoryFilesystem.manyCount).map(MemoryFilesystem.manyName)
            #expect(many.map(\.name) == expected)
            #expect(many.dropFirst(2).enumerated().allSatisfy { $0.element.ino == UInt64(1000 + $0.offset) })
            // A second listing (possibly from the kernel's readdir cache) is the same.
            #expect(try listDirectory(root + "/many").map(\.name) == expected)
            // FileManager (readdir without . and ..) agrees.
            #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/dir") == ["nested.txt"])
        }
    }

    @Test func statReportsAttributes() throws {
        try withMount { root, _, _ in
            let small = try statResult(root + "/small.txt").get()
            #expect(small.st_mode == S_IFREG | 0o644)
            #expect(small.st_size == MemoryFilesystem.smallContent.count)
            #expect(small.st_uid == 1234)
            #expect(small.st_gid == 5678)
            #expect(small.st_nlink == 1)
            #expect(small.st_ino == 3)
            #expect(small.st_mtim.tv_sec == MemoryFilesystem.mtime.seconds)
            #expect(small.st_mtim.tv_nsec == Int(MemoryFilesystem.mtime.nanoseconds))
            #expect(small.st_blocks == 1)

            let directory = try statResult(root + "/dir").get()
            #expect(directory.st_mode == S_IFDIR | 0o755)
            #expect(directory.st_nlink == 2)

            let rootStat = try statResult(root).get()
            #expect(rootStat.st_ino == 1)
            #expect(rootStat.st_mode == S_IFDIR | 0o755)

            let big = try statResult(root + "/big.bin").get()
            #expect(big.st_size == MemoryFilesystem.bigSize)
            #expect(big.st_blocks == MemoryFilesystem.bigSize / 512)

            let hard1 = try statResult(root + "/hard1").get()
            let hard2 = try statResult(root + "/hard2").get()
            #expect(hard1.st_ino == 6 && hard2.st_ino == 6)
            #expect(hard1.st_nlink == 2 && hard2.st_nlink == 2)

            let link = try statResult(root + "/link", follow: false).get()
            #expect(link.st_mode & S_IFMT == S_IFLNK)
            #expect(try statResult(root + "/link").get().st_ino == 3)

            var volume = statvfs()
            #expect(statvfs(root, &volume) == 0)
            #expect(volume.f_namemax == 255)
            #expect(volume.f_blocks == 1000)
        }
    }

    @Test func readsWholeFilesAndRanges() throws {
        try withMount { root, fs, _ in
            let path = root + "/big.bin"
            let fd = open(path, O_RDONLY)
            #expect(fd >= 0)
            defer { close(fd) }
            // Cold-cache reads at odd offsets around 128 KiB boundaries, before anything is cached.
            let ranges: [(offset: Int, count: Int)] = [
                (131_071, 3), (1, 1), (131_072 * 3 - 17, 300_000), (262_143, 131_074), (5_000_001, 77),
                (MemoryFilesystem.bigSize - 5, 5), (131_072 * 40 + 65_535, 1 << 20),
            ]
            for range in ranges {
                let bytes = try preadFile(fd, offset: range.offset, count: range.count)
                #expect(sameBytes(bytes, pattern(offset: range.offset, count: range.count)), "pread at \(range.offset)")
            }
            // At, past and across the end of the file.
            #expect(try preadFile(fd, offset: MemoryFilesystem.bigSize, count: 10).isEmpty)
            #expect(try preadFile(fd, offset: MemoryFilesystem.bigSize + 12345, count: 10).isEmpty)
            let tail = try preadFile(fd, offset: MemoryFilesystem.bigSize - 3, count: 100)
            #expect(sameBytes(tail, pattern(offset: MemoryFilesystem.bigSize - 3, count: 3)))

            let whole = try readFile(path)
            #expect(whole.count == MemoryFilesystem.bigSize)
            #expect(sameBytes(whole, pattern(offset: 0, count: MemoryFilesystem.bigSize)))

            #expect(try readFile(root + "/small.txt") == MemoryFilesystem.smallContent)
            #expect(try readFile(root + "/dir/nested.txt") == Array("nested\n".utf8))
            #expect(try readFile(root + "/hard2") == Array("linked\n".utf8))
            #expect(try readFile(root + "/many/" + MemoryFilesystem.manyName(7)).isEmpty)
            #expect(fs.openFileCount >= 1)  // `fd` is still open
        }
    }

    @Test func opensForWritingFailWithEROFS() throws {
        try withMount { root, _, _ in
            let fd = open(root + "/small.txt", O_WRONLY)
            let code = errno
            if fd >= 0 { close(fd) }
            #expect(fd == -1)
            #expect(code == EROFS)
        }
    }

    @Test func readsSymlinks() throws {
        try withMount { root, _, _ in
            var buffer = [CChar](repeating: 0, count: 256)
            let count = readlink(root + "/link", &buffer, buffer.count)
            #expect(count == 9)
            #expect(String(decoding: buffer[0..<max(count, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self) == "small.txt")
            let throughLink = try readFile(root + "/link")
            #expect(throughLink == MemoryFilesystem.smallContent)
        }
    }

    @Test func extendedAttributes() throws {
        try withMount { root, _, _ in
            let path = root + "/xattr.txt"
            let value = MemoryFilesystem.xattrValue
            #expect(getxattr(path, "user.slipway.test", nil, 0) == value.count)
            var buffer = [UInt8](repeating: 0, count: 256)
            let count = getxattr(path, "user.slipway.test", &buffer, buffer.count)
            #expect(count == value.count)
            #expect(Array(buffer[0..<max(count, 0)]) == value)
            #expect(getxattr(path, "user.slipway.empty", &buffer, buffer.count) == 0)

            #expect(getxattr(path, "user.slipway.test", &buffer, 3) == -1)
            #expect(errno == ERANGE)
            #expect(getxattr(path, "user.missing", &buffer, buffer.count) == -1)
            #expect(errno == ENODATA)
            #expect(getxattr(root + "/small.txt", "user.slipway.test", &buffer, buffer.count) == -1)
            #expect(errno == ENODATA)

            let size = listxattr(path, nil, 0)
            #expect(size == "user.slipway.test\0user.slipway.empty\0".utf8.count)
            var list = [CChar](repeating: 0, count: 256)
            let listed = listxattr(path, &list, list.count)
            let names = list[0..<max(listed, 0)].split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
            #expect(names == ["user.slipway.test", "user.slipway.empty"])
            #expect(listxattr(path, &list, 5) == -1)
            #expect(errno == ERANGE)
            #expect(listxattr(root + "/small.txt", &list, list.count) == 0)
        }
    }

    @Test func missingNamesAreENOENT() throws {
        try withMount { root, fs, _ in
            #expect(errnoOfStat(root + "/nope") == ENOENT)
            #expect(errnoOfStat(root + "/dir/nope") == ENOENT)
            #expect(errnoOfStat(root + "/small.txt/x") == ENOTDIR)
            #expect(open(root + "/nope", O_RDONLY) == -1)
            #expect(errno == ENOENT)
            // Without negative caching every miss is asked again.
            #expect(fs.lookupCount("nope") >= 2)
        }
    }

    @Test func negativeEntriesAreCached() throws {
        try withMount(negativeEntryTimeout: 60) { root, fs, _ in
            #expect(errnoOfStat(root + "/absent") == ENOENT)
            #expect(errnoOfStat(root + "/absent") == ENOENT)
            #expect(errnoOfStat(root + "/absent") == ENOENT)
            #expect(fs.lookupCount("absent") == 1)
            // Present names still resolve.
            #expect(errnoOfStat(root + "/small.txt") == 0)
        }
    }

    @Test func readErrorsSurfaceAsEIO() throws {
        try withMount { root, _, _ in
            let fd = open(root + "/broken", O_RDONLY)
            #expect(fd >= 0)
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 4096)
            #expect(Glibc.read(fd, &buffer, buffer.count) == -1)
            #expect(errno == EIO)
            #expect(pread(fd, &buffer, 100, 1000) == -1)
            #expect(errno == EIO)
        }
    }

    @Test func concurrentSlowReadsRunInParallel() throws {
        try withMount { root, fs, mount in
            let readers = 64
            let stride = MemoryFilesystem.slowSize / readers  // 256 KiB apart: no two readers share a request
            let failures = Mutex<[String]>([])
            let group = DispatchGroup()
            let started = Date()
            for reader in 0..<readers {
                group.enter()
                let thread = Thread {
                    defer { group.leave() }
                    let offset = reader * stride + 4096 + reader
                    let fd = open(root + "/slow.bin", O_RDONLY)
                    guard fd >= 0 else {
                        failures.withLock { $0.append("open failed: \(errno)") }
                        return
                    }
                    defer { close(fd) }
                    var buffer = [UInt8](repeating: 0, count: 100)
                    let count = pread(fd, &buffer, buffer.count, off_t(offset))
                    if count != buffer.count || buffer != pattern(offset: offset, count: buffer.count) {
                        failures.withLock { $0.append("reader \(reader): read \(count) bytes, wrong data") }
                    }
                }
                thread.start()
            }
            group.wait()
            let elapsed = Date().timeIntervalSince(started)
            let statistics = fs.slowReadStatistics
            print("64 concurrent readers of slow.bin: \(String(format: "%.2f", elapsed)) s, \(statistics.total) slow reads, at most \(statistics.maximum) at once (\(mount.maxThreads) threads)")
            #expect(failures.withLock { $0 }.isEmpty)
            #expect(statistics.total >= readers)
            #expect(statistics.maximum > 1)
            // Serially this takes at least 64 × 200 ms = 12.8 s.
            #expect(elapsed < 4)
        }
    }

    @Test func unmountLeavesAnEmptyDirectory() throws {
        let root = try makeTemporaryDirectory()
        defer { rmdir(root) }
        let parentDevice = try statResult("/tmp").get().st_dev
        let mount = FUSEMount(filesystem: MemoryFilesystem(), mountpoint: root, options: Self.options)
        #expect(!mount.isRunning)
        try mount.start()
        #expect(mount.isRunning)
        #expect(try statResult(root).get().st_dev != parentDevice)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).count == 10)
        #expect(throws: FUSEMountError.self) { try mount.start() }

        try mount.unmount()
        mount.waitUntilUnmounted()
        #expect(!mount.isRunning)
        try mount.unmount()  // idempotent
        #expect(try statResult(root).get().st_dev == parentDevice)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).isEmpty)
    }

    @Test func droppingAMountUnmountsItAndReleasesTheFilesystem() throws {
        let root = try makeTemporaryDirectory()
        defer { rmdir(root) }
        let parentDevice = try statResult("/tmp").get().st_dev
        weak var weakFilesystem: MemoryFilesystem?
        do {
            let fs = MemoryFilesystem()
            weakFilesystem = fs
            let mount = FUSEMount(filesystem: fs, mountpoint: root, options: Self.options)
            try mount.start()
            #expect(try readFile(root + "/small.txt") == MemoryFilesystem.smallContent)
        }
        // deinit unmounted it; the session thread then destroys the session and releases its context.
        let deadline = Date(timeIntervalSinceNow: 10)
        while weakFilesystem != nil && Date() < deadline {
            usleep(10_000)
        }
        #expect(weakFilesystem == nil)
        #expect(try statResult(root).get().st_dev == parentDevice)
    }

    @Test func directoryOffsetsResumeListings() throws {
        try withMount { root, _, _ in
            guard let directory = opendir(root + "/many") else {
                Issue.record("opendir failed: \(errno)")
                return
            }
            defer { closedir(directory) }
            func next() -> String? {
                guard let entry = readdir(directory) else { return nil }
                return withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            }
            for _ in 0..<700 { _ = next() }
            let position = telldir(directory)
            let expected = next()
            #expect(expected == MemoryFilesystem.manyName(698))
            for _ in 0..<300 { _ = next() }
            seekdir(directory, position)
            #expect(next() == expected)
            rewinddir(directory)
            #expect(next() == ".")
        }
    }

    @Test func unmountOfABusyMountDetachesIt() throws {
        let root = try makeTemporaryDirectory()
        defer { rmdir(root) }
        let parentDevice = try statResult("/tmp").get().st_dev
        let fs = MemoryFilesystem()
        let mount = FUSEMount(filesystem: fs, mountpoint: root, options: Self.options)
        try mount.start()
        let fd = open(root + "/small.txt", O_RDONLY)
        #expect(fd >= 0)
        try mount.unmount()
        // Detached: gone from the namespace, but the open file is still served.
        #expect(try statResult(root).get().st_dev == parentDevice)
        #expect(mount.isRunning)
        var buffer = [UInt8](repeating: 0, count: 64)
        #expect(pread(fd, &buffer, buffer.count, 0) == MemoryFilesystem.smallContent.count)
        close(fd)
        // The last close ends the session. Its RELEASE is sent asynchronously and the kernel aborts the
        // connection as the superblock goes, so `release` may never be called for files open at unmount.
        mount.waitUntilUnmounted()
        #expect(!mount.isRunning)
    }

    @Test func forceUnmountCleansADeadMount() throws {
        let root = try makeTemporaryDirectory()
        defer { rmdir(root) }
        let parentDevice = try statResult("/tmp").get().st_dev
        // No caching, so every stat asks the daemon (a dead mount answers from the kernel's caches until
        // they expire; statfs, opendir and lookups of new names always ask).
        let mount = FUSEMount(filesystem: MemoryFilesystem(cacheTimeout: 0), mountpoint: root, options: Self.options)
        try mount.start()
        #expect(errnoOfStat(root + "/small.txt") == 0)

        // The loop ends and /dev/fuse is closed without an unmount, as when the daemon is killed.
        mount.simulateDaemonDeath()
        #expect(!mount.isRunning)
        #expect(errnoOfStat(root) == ENOTCONN)
        #expect(errnoOfStat(root + "/small.txt") == ENOTCONN)
        var volume = statvfs()
        #expect(statvfs(root, &volume) == -1)
        #expect(errno == ENOTCONN)

        try FUSEMount.forceUnmount(root)
        #expect(try statResult(root).get().st_dev == parentDevice)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).isEmpty)
        try FUSEMount.forceUnmount(root)  // not a mount point any more: nothing to do
        try mount.unmount()  // the session is over: nothing to do
    }

    @Test func rejectsUnknownOptionsAndMissingMountpoints() throws {
        let root = try makeTemporaryDirectory()
        defer { rmdir(root) }
        let bogus = FUSEMount(filesystem: MemoryFilesystem(), mountpoint: root, options: ["no_such_option_at_all"])
        #expect(throws: FUSEMountError.self) { try bogus.start() }
        #expect(!bogus.isRunning)
        bogus.waitUntilUnmounted()  // never started: returns at once

        let missing = FUSEMount(filesystem: MemoryFilesystem(), mountpoint: root + "/does-not-exist", options: Self.options)
        #expect(throws: FUSEMountError.self) { try missing.start() }
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).isEmpty)
    }
}

/// Error mapping needs no mount.
@Suite(.tags(.unit)) struct FUSEErrorMappingTests {
    @Test func mapsErrorsToErrno() {
        #expect(FUSEOperations.errnoValue(for: FUSEError.notFound) == ENOENT)
        #expect(FUSEOperations.errnoValue(for: FUSEError.noData) == ENODATA)
        #expect(FUSEOperations.errnoValue(for: POSIXError(.ENOTDIR)) == ENOTDIR)
        #expect(FUSEOperations.errnoValue(for: CocoaError(.fileNoSuchFile)) == EIO)
        #expect(FUSEOperations.errnoValue(for: FUSEError(0)) == EIO)
        #expect(FUSEOperations.errnoValue(for: FUSEError(-5)) == EIO)
        #expect(FUSEOperations.errnoValue(for: FUSEError(4096)) == EIO)
        #expect(sanitizedTimeout(.nan) == 0)
        #expect(sanitizedTimeout(-1) == 0)
        #expect(sanitizedTimeout(.infinity) == 1e15)
        #expect(sanitizedTimeout(2.5) == 2.5)
    }
}
