public struct BlobSinkError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Where blob bytes go while downloading. The sink hashes what it holds so a resumed transfer can be verified
/// without reading the bytes back.
public protocol BlobSink: AnyObject, Sendable {
    var count: Int64 { get }
    func append(_ bytes: UnsafeRawBufferPointer) throws
    /// Drops everything held (a server ignored Range, or the bytes were wrong).
    func reset() throws
    func digest(_ algorithm: Digest.Algorithm) -> Digest
    /// Suspends until `append` can take more bytes without blocking: a sink whose reader is slower than the
    /// download (a decoder) holds the download here, in the task, rather than in `append`, on a thread of the
    /// cooperative pool. Producers running in async code call it before each `append`.
    func waitForRoom() async throws
}

extension BlobSink {
    /// Sinks that write to memory or a file always have room.
    public func waitForRoom() async throws {}
}

/// A sink for small blobs held in memory.
public final class MemoryBlobSink: BlobSink, @unchecked Sendable {
    // Used by one download at a time; the registry client never appends concurrently.
    public private(set) var bytes: [UInt8] = []
    public init() {}
    public var count: Int64 { Int64(bytes.count) }
    public func append(_ chunk: UnsafeRawBufferPointer) throws { bytes.append(contentsOf: chunk) }
    public func reset() throws { bytes = [] }
    public func digest(_ algorithm: Digest.Algorithm) -> Digest {
        var hasher = DigestHasher(algorithm)
        hasher.update(bytes)
        return hasher.finalize()
    }
}
