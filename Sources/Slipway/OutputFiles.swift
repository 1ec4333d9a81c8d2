/// Writing the files conversions and exports produce: atomically, and with the kernel copying what it can.
#if canImport(Glibc)
import Glibc
#endif
import Blocking
import CLinux
import ContentStore
import Foundation

/// Copies `size` bytes of `file` into `descriptor` at `offset` with copy_file_range, so the kernel moves them
/// (without a round trip through user space, and as a reflink where the filesystem shares extents).
func appendFile(_ file: String, size: Int64, to descriptor: Int32, at offset: Int64, path: String) throws {
    let source = open(file, O_RDONLY | O_CLOEXEC)
    guard source >= 0 else { throw ConvertError.io(path: file, reason: String(cString: strerror(errno))) }
    defer { close(source) }
    var sourceOffset = 0
    var destinationOffset = Int(offset)
    var remaining = Int(size)
    while remaining > 0 {
        let copied = copy_file_range(source, &sourceOffset, descriptor, &destinationOffset, remaining, 0)
        if copied < 0, errno == EINTR { continue }
        if copied < 0, [EXDEV, EINVAL, ENOSYS, EOPNOTSUPP].contains(errno) {
            // Another filesystem that cannot take it: through memory.
            return try copyThroughMemory(source, from: sourceOffset, to: descriptor, at: destinationOffset, count: remaining, path: path)
        }
        guard copied > 0 else { throw ConvertError.io(path: path, reason: "copying \(file): \(copied < 0 ? String(cString: strerror(errno)) : "short file")") }
        remaining -= copied
    }
}

/// A new file at `destination` with the bytes of `source`.
func copyFile(_ source: String, to destination: String) throws {
    var info = stat()
    guard stat(source, &info) == 0 else { throw ConvertError.io(path: source, reason: String(cString: strerror(errno))) }
    let descriptor = open(destination, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard descriptor >= 0 else { throw ConvertError.io(path: destination, reason: String(cString: strerror(errno))) }
    defer { close(descriptor) }
    try appendFile(source, size: Int64(info.st_size), to: descriptor, at: 0, path: destination)
}

private func copyThroughMemory(_ source: Int32, from sourceOffset: Int, to descriptor: Int32, at offset: Int, count: Int, path: String) throws {
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    var done = 0
    while done < count {
        let got = buffer.withUnsafeMutableBytes { pread(source, $0.baseAddress, min($0.count, count - done), sourceOffset + done) }
        if got < 0, errno == EINTR { continue }
        guard got > 0 else { throw ConvertError.io(path: path, reason: "the source ended early") }
        var written = 0
        while written < got {
            let n = buffer.withUnsafeBytes { pwrite(descriptor, $0.baseAddress! + written, got - written, offset + done + written) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw ConvertError.io(path: path, reason: String(cString: strerror(errno))) }
            written += n
        }
        done += got
    }
}

/// Writes all of `bytes` at `offset`.
func writeAll(_ bytes: [UInt8], to descriptor: Int32, at offset: Int64, path: String) throws {
    var done = 0
    while done < bytes.count {
        let written = bytes.withUnsafeBytes { pwrite(descriptor, $0.baseAddress! + done, bytes.count - done, Int(offset) + done) }
        if written < 0, errno == EINTR { continue }
        guard written > 0 else { throw ConvertError.io(path: path, reason: String(cString: strerror(errno))) }
        done += written
    }
}

/// Writes a file beside `path` through `body` (given the open file and its temporary name) and renames it into
/// place once synced: an interrupted conversion leaves no file under the final name, and `PartialOutput`
/// removes the temporary one on SIGINT or SIGTERM.
func writeFileAtomically(to path: String, _ body: (Int32, String) async throws -> Void) async throws {
    let temporary = "\((path as NSString).deletingLastPathComponent)/.tmp-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
    let partial = PartialOutput.register(temporary)
    defer {
        unlink(temporary)
        partial.end()
    }
    let descriptor = open(temporary, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard descriptor >= 0 else { throw ConvertError.io(path: temporary, reason: String(cString: strerror(errno))) }
    do {
        defer { close(descriptor) }
        try await body(descriptor, temporary)
        try await runBlocking {
            guard fsync(descriptor) == 0 else { throw ConvertError.io(path: temporary, reason: "fsync: \(String(cString: strerror(errno)))") }
        }
    }
    guard rename(temporary, path) == 0 else { throw ConvertError.io(path: path, reason: String(cString: strerror(errno))) }
}
