#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOHTTP1

/// Writes a blob's answer — 200 whole, 206 one range, 206 `multipart/byteranges`, or 416 — pulling bytes from
/// `read(offset, length)`, which returns at most `length` bytes starting at `offset` (fewer when it has to wait
/// less). Content-Length is always exact, so a body cut short is a failed transfer to every client.
struct BlobResponse {
    var size: Int64
    var headers: HTTPHeaders
    var ranges: ByteRangeRequest
    /// Bytes per write: big enough for throughput, small enough that a slow client holds little memory.
    static let writeSize = 1 << 20

    func send(to response: ResponseWriter, read: (Int64, Int) async throws -> ByteBuffer) async throws {
        var headers = headers
        headers.replaceOrAdd(name: "Accept-Ranges", value: "bytes")
        let boundary = Self.boundary()
        let partType = headers.first(name: "Content-Type") ?? "application/octet-stream"
        var ranges = ranges
        var multipartBodyLength: Int64 = 0
        if case .partial(let parts) = ranges, parts.count > 1 {
            if let length = multipartLength(parts, boundary: boundary, partType: partType) {
                multipartBodyLength = length
            } else {
                // Parts of a blob whose size is near Int64.max: the body's length is not a number, so the Range
                // is ignored (RFC 9110 allows it) and the blob goes whole.
                ranges = .whole
            }
        }
        switch ranges {
        case .whole:
            headers.replaceOrAdd(name: "Content-Length", value: String(size))
            try await response.sendHead(.ok, headers: headers)
            try await copy(0..<size, to: response, read: read)
        case .unsatisfiable:
            headers.remove(name: "Content-Type")
            headers.replaceOrAdd(name: "Content-Range", value: "bytes */\(size)")
            try await response.send(.rangeNotSatisfiable, headers: headers)
            return
        case .partial(let ranges) where ranges.count == 1:
            let range = ranges[0]
            headers.replaceOrAdd(name: "Content-Length", value: String(range.count))
            headers.replaceOrAdd(name: "Content-Range", value: "bytes \(range.lowerBound)-\(range.upperBound - 1)/\(size)")
            try await response.sendHead(.partialContent, headers: headers)
            try await copy(range, to: response, read: read)
        case .partial(let ranges):
            let preambles = ranges.enumerated().map { index, range in preamble(index: index, range: range, boundary: boundary, partType: partType) }
            let closing = Self.closing(boundary: boundary)
            headers.replaceOrAdd(name: "Content-Type", value: "multipart/byteranges; boundary=\(boundary)")
            headers.replaceOrAdd(name: "Content-Length", value: String(multipartBodyLength))
            try await response.sendHead(.partialContent, headers: headers)
            for (range, preamble) in zip(ranges, preambles) {
                try await response.write(response.allocator.buffer(bytes: preamble))
                try await copy(range, to: response, read: read)
            }
            try await response.write(response.allocator.buffer(bytes: closing))
        }
        try await response.end()
    }

    private func preamble(index: Int, range: Range<Int64>, boundary: String, partType: String) -> [UInt8] {
        Array("\(index == 0 ? "" : "\r\n")--\(boundary)\r\nContent-Type: \(partType)\r\nContent-Range: bytes \(range.lowerBound)-\(range.upperBound - 1)/\(size)\r\n\r\n".utf8)
    }

    private static func closing(boundary: String) -> [UInt8] { Array("\r\n--\(boundary)--\r\n".utf8) }

    /// The exact length of the `multipart/byteranges` body, or nil when it overflows Int64.
    private func multipartLength(_ ranges: [Range<Int64>], boundary: String, partType: String) -> Int64? {
        var length = Int64(Self.closing(boundary: boundary).count)
        for (index, range) in ranges.enumerated() {
            let framing = Int64(preamble(index: index, range: range, boundary: boundary, partType: partType).count)
            let (withFraming, overflow1) = length.addingReportingOverflow(framing)
            let (withBytes, overflow2) = withFraming.addingReportingOverflow(Int64(range.count))
            guard !overflow1, !overflow2 else { return nil }
            length = withBytes
        }
        return length
    }

    private func copy(_ range: Range<Int64>, to response: ResponseWriter, read: (Int64, Int) async throws -> ByteBuffer) async throws {
        var offset = range.lowerBound
        while offset < range.upperBound {
            let buffer = try await read(offset, Int(min(Int64(Self.writeSize), range.upperBound - offset)))
            guard buffer.readableBytes > 0 else { throw BlobReadError.shortRead(offset: offset) }
            offset += Int64(buffer.readableBytes)
            try await response.write(buffer)
        }
    }

    private static func boundary() -> String {
        (0..<16).map { _ in String(UInt8.random(in: 0...255), radix: 16) }.joined()
    }
}

enum BlobReadError: Error, CustomStringConvertible {
    case shortRead(offset: Int64)
    case fillFailed(String)
    case fillRestarted
    case storeRead(String)

    var description: String {
        switch self {
        case .shortRead(let offset): return "the blob ended early at byte \(offset)"
        case .fillFailed(let reason): return "the upstream fill failed: \(reason)"
        case .fillRestarted: return "the upstream transfer restarted; bytes already sent may be wrong"
        case .storeRead(let reason): return "reading the store: \(reason)"
        }
    }
}

/// Reads a file by `pread`: blocking, but on a local page-cached file it takes microseconds, which is less than a
/// hop to a thread pool would cost.
func preadBuffer(_ fd: Int32, offset: Int64, length: Int, allocator: ByteBufferAllocator) throws -> ByteBuffer {
    var buffer = allocator.buffer(capacity: length)
    _ = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { pointer -> Int in
        while true {
            let count = pread(fd, pointer.baseAddress, length, off_t(offset))
            if count >= 0 { return count }
            if errno == EINTR { continue }
            throw BlobReadError.storeRead(String(cString: strerror(errno)))
        }
    }
    return buffer
}
