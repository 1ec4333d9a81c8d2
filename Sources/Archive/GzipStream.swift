/// A whole gzip stream (every member) inflated with ISA-L, over compressed bytes pulled from `next`: for a reader
/// outside this module that needs a layer's uncompressed bytes front to back without unpacking it (a lazy mount
/// reading an indexed layer whole to verify it). Bounded by `limit` like every layer Slipway decompresses.
package final class GzipStream {
    private let decoder: StreamDecoder

    package init(
        compressedSize: Int64, layer: String, limit: DecompressionLimit = .standard, next: @escaping @Sendable () throws -> [UInt8]?
    ) {
        decoder = makeDecoder(.gzip, input: InputReader(.chunks(ChunkSource(expectedSize: compressedSize, next))), limit: limit, layer: layer)
    }

    /// Fills `buffer` as far as possible; fewer bytes only at the end of the stream (0 = done).
    package func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int { try decoder.read(into: buffer) }
}
