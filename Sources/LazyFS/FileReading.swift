#if canImport(Glibc)
import Glibc
#endif

/// Up to `length` bytes of `fd` from `offset`; fewer only at end of file. nil (with `errno` set) on a read error.
func readFully(_ fd: Int32, offset: Int64, length: Int) -> [UInt8]? {
    var buffer = [UInt8](repeating: 0, count: length)
    var done = 0
    while done < length {
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, length - done, off_t(offset) + off_t(done)) }
        if n < 0 && errno == EINTR { continue }
        if n < 0 { return nil }
        if n == 0 { break }
        done += n
    }
    return done == length ? buffer : Array(buffer[..<done])
}
