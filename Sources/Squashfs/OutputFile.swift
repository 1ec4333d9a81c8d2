import CLinux

#if canImport(Glibc)
import Glibc
#endif

/// The file a squashfs is written into, from byte `base` on (a SIF's partition); positions are counted from
/// `base`, as every offset inside a squashfs is. Appends are buffered; runs copied from an earlier image go
/// through `copy_file_range`, so reused blocks never pass through user space.
final class OutputFile {
    let descriptor: Int32
    let base: Int64
    let path: String
    private(set) var position: UInt64 = 0
    private var buffer: [UInt8] = []
    private var bufferStart: UInt64 = 0
    private static let bufferLimit = 1 << 20

    init(descriptor: Int32, base: Int64, path: String) {
        self.descriptor = descriptor
        self.base = base
        self.path = path
        buffer.reserveCapacity(Self.bufferLimit)
    }

    func append(_ bytes: [UInt8]) throws(SquashfsError) {
        if buffer.isEmpty { bufferStart = position }
        buffer += bytes
        position += UInt64(bytes.count)
        if buffer.count >= Self.bufferLimit { try flush() }
    }

    /// Appends `count` bytes of `source` from `offset`.
    func copy(from source: Int32, sourcePath: String, offset: Int64, count: Int64) throws(SquashfsError) {
        try flush()
        var sourceOffset = Int(offset)
        var destinationOffset = Int(base) + Int(position)
        var remaining = count
        while remaining > 0 {
            let copied = copy_file_range(source, &sourceOffset, descriptor, &destinationOffset, Int(min(remaining, 1 << 30)), 0)
            if copied < 0 {
                if errno == EINTR { continue }
                if errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP {
                    try copyThroughMemory(from: source, sourcePath: sourcePath, offset: Int64(sourceOffset), to: Int64(destinationOffset), count: remaining)
                    break
                }
                throw .io(path: sourcePath, reason: "copying \(count) bytes into \(path): \(String(cString: strerror(errno)))")
            }
            guard copied > 0 else { throw .io(path: sourcePath, reason: "ends before the \(count) bytes this image reuses") }
            remaining -= Int64(copied)
        }
        position += UInt64(count)
    }

    private func copyThroughMemory(from source: Int32, sourcePath: String, offset: Int64, to destination: Int64, count: Int64) throws(SquashfsError) {
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        var done: Int64 = 0
        while done < count {
            let wanted = Int(min(Int64(chunk.count), count - done))
            let got = chunk.withUnsafeMutableBytes { pread(source, $0.baseAddress, wanted, Int(offset + done)) }
            if got < 0, errno == EINTR { continue }
            guard got > 0 else { throw .io(path: sourcePath, reason: "ends before the \(count) bytes this image reuses") }
            try writeAll(Array(chunk[..<got]), at: destination + done)
            done += Int64(got)
        }
    }

    func flush() throws(SquashfsError) {
        guard !buffer.isEmpty else { return }
        try writeAll(buffer, at: base + Int64(bufferStart))
        buffer.removeAll(keepingCapacity: true)
    }

    /// Writes `bytes` at `offset` (from `base`) without moving the append position: the superblock, last.
    func write(_ bytes: [UInt8], at offset: UInt64) throws(SquashfsError) {
        try flush()
        try writeAll(bytes, at: base + Int64(offset))
    }

    private func writeAll(_ bytes: [UInt8], at offset: Int64) throws(SquashfsError) {
        var done = 0
        while done < bytes.count {
            let written = bytes.withUnsafeBytes { pwrite(descriptor, $0.baseAddress! + done, bytes.count - done, Int(offset) + done) }
            if written < 0 {
                if errno == EINTR { continue }
                throw .io(path: path, reason: String(cString: strerror(errno)))
            }
            done += written
        }
    }
}
