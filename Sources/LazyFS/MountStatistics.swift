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
    /// Indexed layers read whole in the background whose digest and diffID matched.
    public var layersVerified: Int = 0
    /// Indexed layers whose bytes disagreed with their digest, diffID or index: their reads fail since.
    public var layersRejected: Int = 0
    /// eStargz layers written into the store for the overlay once all their chunks had arrived.
    public var layersMaterialized: Int = 0
    /// Opens the kernel served straight from a local copy of the file (FUSE passthrough), with no read through here.
    public var passthroughOpens: Int = 0

    public init() {}

    enum CodingKeys: String, CodingKey {
        case bytesFetched, tocBytesFetched, requests, cacheHits, chunksFetched, blockingReads, failedReads, prefetchDone, prefetchTotal
        case prefetchFinished, layersVerified, layersRejected, layersMaterialized, passthroughOpens
    }

    /// Decodes statistics written by any version: counters a writer did not know are 0.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        bytesFetched = try c.decodeIfPresent(Int64.self, forKey: .bytesFetched) ?? 0
        tocBytesFetched = try c.decodeIfPresent(Int64.self, forKey: .tocBytesFetched) ?? 0
        requests = try c.decodeIfPresent(Int.self, forKey: .requests) ?? 0
        cacheHits = try c.decodeIfPresent(Int.self, forKey: .cacheHits) ?? 0
        chunksFetched = try c.decodeIfPresent(Int.self, forKey: .chunksFetched) ?? 0
        blockingReads = try c.decodeIfPresent(Int.self, forKey: .blockingReads) ?? 0
        failedReads = try c.decodeIfPresent(Int.self, forKey: .failedReads) ?? 0
        prefetchDone = try c.decodeIfPresent(Int64.self, forKey: .prefetchDone) ?? 0
        prefetchTotal = try c.decodeIfPresent(Int64.self, forKey: .prefetchTotal) ?? 0
        prefetchFinished = try c.decodeIfPresent(Bool.self, forKey: .prefetchFinished) ?? false
        layersVerified = try c.decodeIfPresent(Int.self, forKey: .layersVerified) ?? 0
        layersRejected = try c.decodeIfPresent(Int.self, forKey: .layersRejected) ?? 0
        layersMaterialized = try c.decodeIfPresent(Int.self, forKey: .layersMaterialized) ?? 0
        passthroughOpens = try c.decodeIfPresent(Int.self, forKey: .passthroughOpens) ?? 0
    }
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
