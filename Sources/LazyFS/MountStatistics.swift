import Foundation
import Synchronization

/// What a lazy mount has done so far; shown by `slipway status` and printed on unmount.
public struct MountStatistics: Sendable, Codable, Equatable {
    /// Compressed bytes received from the registry (ranges and whole layers).
    public var bytesFetched: Int64 = 0
    /// Of those, bytes of layer tails read for footers and TOCs.
    public var tocBytesFetched: Int64 = 0
    /// HTTP requests for blob bytes.
    public var requests: Int = 0
    /// Chunks served from the chunk cache without a fetch.
    public var cacheHits: Int = 0
    /// Chunks fetched, decompressed and verified.
    public var chunksFetched: Int = 0
    /// Reads that had to wait for the network.
    public var blockingReads: Int = 0
    /// Reads that failed (EIO) because a fetch failed or timed out.
    public var failedReads: Int = 0
    /// Compressed bytes the background prefetch has covered, of `prefetchTotal`.
    public var prefetchDone: Int64 = 0
    public var prefetchTotal: Int64 = 0
    public var prefetchFinished = false

    public init() {}
}

/// Counters updated from FUSE and prefetch threads.
public final class MountCounters: Sendable {
    private let value = Mutex(MountStatistics())

    public init() {}

    public var snapshot: MountStatistics { value.withLock { $0 } }

    public func update(_ body: (inout MountStatistics) -> Void) {
        value.withLock { body(&$0) }
    }
}
