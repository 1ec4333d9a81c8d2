#if canImport(Glibc)
import Glibc
#endif

/// A pull-style source of (compressed) layer bytes, e.g. a network download bridged to a blocking call.
/// `next` is called repeatedly on the decompression thread; it returns nil at the end of the blob.
public struct ChunkSource: Sendable {
    let next: @Sendable () throws -> [UInt8]?
    /// The blob's size when known (a descriptor's): the decompression limit scales with it.
    let expectedSize: Int64?
    public init(expectedSize: Int64? = nil, _ next: @escaping @Sendable () throws -> [UInt8]?) {
        self.next = next
        self.expectedSize = expectedSize
    }
}

/// Where the decompression thread reads the blob from.
enum LayerInput: Sendable {
    /// A file descriptor owned by the caller (must stay open until the operation returns).
    case fileDescriptor(Int32, path: String)
    case chunks(ChunkSource)
}

/// Blocking reader over a `LayerInput`; used by a single thread.
final class InputReader {
    private let input: LayerInput
    private var pending: [UInt8] = []
    private var pendingOffset = 0
    /// Size of the whole input when known up front (a file's, a descriptor's).
    let totalSize: Int64?
    private(set) var bytesRead: Int64 = 0

    init(_ input: LayerInput) {
        self.input = input
        switch input {
        case .fileDescriptor(let fd, _):
            var info = stat()
            totalSize = fstat(fd, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG ? Int64(info.st_size) : nil
        case .chunks(let source):
            totalSize = source.expectedSize
        }
    }

    /// Reads up to `capacity` bytes; returns 0 at end of input.
    func read(into buffer: UnsafeMutableRawPointer, capacity: Int) throws -> Int {
        let n = try readInput(into: buffer, capacity: capacity)
        bytesRead += Int64(n)
        return n
    }

    private func readInput(into buffer: UnsafeMutableRawPointer, capacity: Int) throws -> Int {
        switch input {
        case .fileDescriptor(let fd, let path):
            while true {
                let n = Glibc.read(fd, buffer, capacity)
                if n >= 0 { return n }
                if errno == EINTR { continue }
                throw ArchiveError.io("read", path)
            }
        case .chunks(let source):
            while pendingOffset >= pending.count {
                guard let next = try source.next() else { return 0 }
                pending = next
                pendingOffset = 0
            }
            let n = min(capacity, pending.count - pendingOffset)
            pending.withUnsafeBytes { src in
                buffer.copyMemory(from: src.baseAddress! + pendingOffset, byteCount: n)
            }
            pendingOffset += n
            return n
        }
    }
}
