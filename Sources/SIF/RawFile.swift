#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A file descriptor with positional I/O that reports failures as `SIFError.io`.
final class RawFile {
    let fd: Int32
    private var closed = false
    let path: String

    init(path: String, flags: Int32, mode: mode_t = 0) throws(SIFError) {
        var fd: Int32
        repeat {
            fd = open(path, flags | O_CLOEXEC, mode)
        } while fd < 0 && errno == EINTR
        guard fd >= 0 else { throw .io(path: path, operation: "open", errno: errno) }
        self.fd = fd
        self.path = path
    }

    deinit { if !closed { _ = close(fd) } }

    /// Closes explicitly, reporting errors (deinit would ignore them).
    func closeChecked() throws(SIFError) {
        guard !closed else { return }
        closed = true
        if close(fd) != 0 {
            let code = errno
            if code != EINTR { throw .io(path: path, operation: "close", errno: code) }
        }
    }

    func size() throws(SIFError) -> Int64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io(path: path, operation: "fstat", errno: errno) }
        return Int64(st.st_size)
    }

    /// Reads up to `count` bytes at `offset`; returns fewer only at end of file.
    func read(count: Int, at offset: Int64) throws(SIFError) -> [UInt8] {
        guard count > 0 else { return [] }
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = buffer.withUnsafeMutableBytes { raw in
                pread(fd, raw.baseAddress! + done, count - done, off_t(offset) + off_t(done))
            }
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                throw .io(path: path, operation: "pread", errno: code)
            }
            if n == 0 { break }
            done += n
        }
        if done < count { buffer.removeSubrange(done...) }
        return buffer
    }

    /// Writes all of `bytes` at `offset`.
    func write(_ bytes: [UInt8], at offset: Int64) throws(SIFError) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                pwrite(fd, raw.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            }
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                throw .io(path: path, operation: "pwrite", errno: code)
            }
            done += n
        }
    }

    func chmod(_ mode: mode_t) throws(SIFError) {
        guard fchmod(fd, mode) == 0 else { throw .io(path: path, operation: "fchmod", errno: errno) }
    }
}
