#if canImport(Glibc)
import Glibc
#endif

/// A layer whose decompression and hashing have started on their own thread, holding up to `readAhead` bytes
/// of decoded tar until an extraction consumes them. Creating the next layer's `DecodedLayer` while the current
/// one is being extracted overlaps one layer's decompression with the other's file creation, which keeps both
/// cores busy across layer boundaries. Consume it once with `LayerApplier.apply(_:to:options:)`.
public final class DecodedLayer: @unchecked Sendable {
    // The pipe synchronises producer and consumer; `fd` lives until the producer thread has exited.
    let pipe: ChunkPipe
    let digest = DigestBox()
    private let fd: Int32
    public let path: String

    /// `name` (e.g. the layer's digest, else `path`) identifies the layer in errors; `limit` bounds its decoded size.
    public init(
        layerAt path: String, compression: LayerCompression, readAhead: Int = 6 << 20, name: String? = nil,
        limit: DecompressionLimit = .configured
    ) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw ArchiveError.io("open layer", path) }
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
        self.fd = fd
        self.path = path
        pipe = ChunkPipe(chunkSize: 1 << 20, chunkCount: max(2, readAhead >> 20))
        DecompressionPipeline.startProducer(
            input: .fileDescriptor(fd, path: path), compression: compression, limit: limit, layer: name ?? path, pipe: pipe, result: digest)
    }

    /// Decodes a blob that arrives as it is downloaded; `label` names it in errors.
    public init(
        streaming chunks: ChunkSource, label: String, compression: LayerCompression, readAhead: Int = 6 << 20,
        limit: DecompressionLimit = .configured
    ) {
        fd = -1
        path = label
        pipe = ChunkPipe(chunkSize: 1 << 20, chunkCount: max(2, readAhead >> 20))
        DecompressionPipeline.startProducer(
            input: .chunks(chunks), compression: compression, limit: limit, layer: label, pipe: pipe, result: digest)
    }

    deinit {
        // An unconsumed layer (the unpack failed earlier) stops its producer before the fd goes.
        pipe.cancel()
        pipe.waitForProducerExit()
        if fd >= 0 { close(fd) }
    }
}

extension DecodedLayer {
    /// Reads the decoded tar entry by entry (for conversions that rewrite a layer rather than extract it). Read it
    /// to the end, then `verifiedDiffID()` gives the diffID of every byte the stream decoded.
    public func tarReader() -> TarReader { TarReader(source: PipeByteSource(pipe)) }

    /// The next decoded bytes of the tar, in order; nil at its end. Throws the decoder's error.
    public func nextChunk() throws -> [UInt8]? {
        guard let chunk = try pipe.pop() else { return nil }
        defer { pipe.recycle(chunk) }
        return Array(chunk.bytes)
    }

    /// The diffID and size once the whole stream was read; throws the decoder's error if decompression failed.
    public func finishedDigest() throws -> (diffID: String, size: Int64) {
        pipe.waitForProducerExit()
        if let failure = pipe.failure { throw failure }
        guard let result = digest.value else { throw ArchiveError(.truncated(detail: "decompression did not complete")) }
        return (result.diffID, result.size)
    }
}
