import Archive
import Blocking
import OCI

extension Layer {
    /// The compressed blob, chunk by chunk as it arrives, whatever the layer's source. Ends once the whole blob
    /// matched the descriptor's digest.
    public func compressedBytes() -> LayerBytes { LayerBytes(layer: self, uncompressed: false) }

    /// The uncompressed tar, decoded on a thread of its own as it is read: from the local file when there is one,
    /// else while the blob downloads. Ends once the tar matched the diffID the config promises.
    public func uncompressedTar() -> LayerBytes { LayerBytes(layer: self, uncompressed: true) }

    /// Runs `read` on a thread of its own with the layer's tar decoding as `read` consumes it, as `uncompressedTar`
    /// does but without a hop per chunk: for consumers that are blocking code (a format writer reading entry by
    /// entry). `read` must read the tar to its end; its result comes back only once the tar matched the diffID
    /// (and a downloaded blob its digest).
    public func withUncompressedTar<R: Sendable>(_ read: @escaping @Sendable (DecodedLayer) throws -> R) async throws -> R {
        let feed = LayerFeed(self, compression: try await LayerCompression.of(self))
        let result: Result<R, any Error> = await withTaskCancellationHandler {
            do {
                return .success(try await runBlocking {
                    defer { feed.stop() }
                    let decoded = try feed.decoded()
                    let value = try read(decoded)
                    try feed.verify(decoded)
                    return value
                })
            } catch {
                return .failure(error)
            }
        } onCancel: {
            feed.cancel()
        }
        return try await feed.outcome(result)
    }
}

/// A layer's bytes as an async sequence of chunks, with backpressure: the producer (a download, a decoder) stays
/// a few MiB ahead of the consumer, a download suspended while it waits, a decoder blocked on its own thread.
/// The sequence ends only once every byte was verified and throws otherwise, so keep nothing built from the bytes
/// until it ended. Dropping the iterator stops the producer.
public struct LayerBytes: AsyncSequence, Sendable {
    public typealias Element = [UInt8]

    let layer: any Layer
    let uncompressed: Bool

    public func makeAsyncIterator() -> Iterator { Iterator(layer: layer, uncompressed: uncompressed) }

    public struct Iterator: AsyncIteratorProtocol {
        let layer: any Layer
        let uncompressed: Bool
        private var feed: LayerFeed?
        private var chunks: ProducedElements<[UInt8]>.Iterator?
        private var ended = false

        init(layer: any Layer, uncompressed: Bool) {
            self.layer = layer
            self.uncompressed = uncompressed
        }

        public mutating func next() async throws -> [UInt8]? {
            guard !ended else { return nil }
            if chunks == nil { try await start() }
            let read: Result<Void, any Error>
            do {
                if let chunk = try await chunks!.next() { return chunk }
                read = .success(())
            } catch {
                read = .failure(error)
            }
            ended = true
            try await feed!.outcome(read)
            return nil
        }

        private mutating func start() async throws {
            let uncompressed = uncompressed
            let feed = LayerFeed(layer, compression: uncompressed ? try await LayerCompression.of(layer) : nil)
            self.feed = feed
            chunks = ProducedElements(capacity: 4) { yield in
                defer { feed.stop() }
                if uncompressed {
                    let decoded = try feed.decoded()
                    while let chunk = try decoded.nextChunk() { try yield(chunk) }
                    try feed.verify(decoded)
                } else {
                    while let chunk = try feed.nextCompressedChunk() { try yield(chunk) }
                }
            }.makeAsyncIterator()
        }
    }
}
