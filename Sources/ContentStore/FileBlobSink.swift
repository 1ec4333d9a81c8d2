#if canImport(Glibc)
import Glibc
#endif
import OCI


/// A partial blob file in the store's ingest directory that hashes what it holds. Reopening a partial file left
/// by a killed process rehashes its bytes, so the download resumes where it stopped.
public final class FileBlobSink: BlobSink, @unchecked Sendable {
    // Owned by the one ingest that holds the blob's lock; never shared between tasks concurrently.
    public let path: String
    private let fd: Int32
    private let algorithm: Digest.Algorithm
    private var hasher: DigestHasher
    public private(set) var count: Int64 = 0
    /// Bytes found on disk from an earlier, interrupted attempt.
    public let resumedBytes: Int64

    init(path: String, algorithm: Digest.Algorithm) throws {
        self.path = path
        self.algorithm = algorithm
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw StoreError.io(path: path, operation: "open", errno: errno) }
        var hasher = DigestHasher(algorithm)
        var held: Int64 = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let got = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if got < 0 {
                if errno == EINTR { continue }
                let code = errno
                close(fd)
                throw StoreError.io(path: path, operation: "read", errno: code)
            }
            if got == 0 { break }
            buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<got])) }
            held += Int64(got)
        }
        self.fd = fd
        self.hasher = hasher
        self.count = held
        resumedBytes = held
    }

    deinit { close(fd) }

    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let written = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw BlobSinkError("writing \(path): \(String(cString: strerror(errno)))")
            }
            offset += written
        }
        hasher.update(bytes)
        count += Int64(bytes.count)
    }

    public func reset() throws {
        guard ftruncate(fd, 0) == 0, lseek(fd, 0, SEEK_SET) == 0 else { throw BlobSinkError("truncating \(path)") }
        hasher = DigestHasher(algorithm)
        count = 0
    }

    public func digest(_ algorithm: Digest.Algorithm) -> Digest {
        precondition(algorithm == self.algorithm, "a sink hashes with the algorithm of the digest it was opened for")
        return hasher.finalize()
    }

    func sync() throws {
        guard fsync(fd) == 0 else { throw StoreError.io(path: path, operation: "fsync", errno: errno) }
    }
}
