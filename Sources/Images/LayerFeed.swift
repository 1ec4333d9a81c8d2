import Archive
import OCI

/// Where a thread reads a layer from: its local file when there is one and the reader wants the tar (decoded in
/// place, checked against the diffID), else a download that fills a sink as the thread reads it (hashed as it
/// passes). Started in async code, read on a thread of its own; `outcome` then says which failure to report.
struct LayerFeed: Sendable {
    let layer: any Layer
    private let compression: LayerCompression
    private let sink: StreamingBlobSink?
    private let download: Task<Void, any Error>?

    /// `compression` nil: the reader wants the compressed blob, which always comes through the download (a local
    /// file too: its source copies it into the sink, so the bytes are hashed).
    init(_ layer: any Layer, compression: LayerCompression?) {
        self.layer = layer
        self.compression = compression ?? .none
        if compression != nil, layer.localFile != nil {
            sink = nil
            download = nil
            return
        }
        let sink = StreamingBlobSink(layer.descriptor)
        self.sink = sink
        download = Task {
            do {
                try await layer.fetch(into: sink)
                sink.finish(error: nil)
            } catch {
                sink.finish(error: error)
                throw error
            }
        }
    }

    private var name: String { layer.descriptor.digest.description }

    /// On the reading thread: the uncompressed tar, decoding as it is read.
    func decoded() throws -> DecodedLayer {
        guard let sink else { return try DecodedLayer(layerAt: layer.localFile!, compression: compression, name: name) }
        return DecodedLayer(streaming: sink.chunks, label: name, compression: compression)
    }

    /// On the reading thread: the compressed blob's next bytes; nil after the last once the digest matched.
    func nextCompressedChunk() throws -> [UInt8]? { try sink?.nextChunk() }

    /// On the reading thread, once the whole tar was read: it must hash to the diffID the config promises, and a
    /// downloaded blob to its digest (the sink ends only once it did, which the decoder need not have waited for).
    func verify(_ decoded: DecodedLayer) throws {
        let (actual, _) = try decoded.finishedDigest()
        guard actual == layer.diffID.description else {
            throw LayerReadError.diffIDMismatch(blob: layer.descriptor.digest, expected: layer.diffID, actual: actual)
        }
        while try sink?.nextChunk() != nil {}
    }

    /// The reader is done or gave up: a download it no longer reads stops.
    func stop() { sink?.cancel() }

    /// The task waiting for the reader was cancelled.
    func cancel() {
        sink?.cancel()
        download?.cancel()
    }

    /// What the reader's `read` amounts to: its own error when it stopped first (the layer was bad; the download
    /// only stopped because the reader did), else a failed download's, which explains a failed read better than
    /// the decoder's view of it.
    func outcome<R>(_ read: Result<R, any Error>) async throws -> R {
        if case .failure(let error) = read, sink?.stoppedBeforeEnd ?? true { throw error }
        try await download?.value
        return try read.get()
    }
}

public enum LayerReadError: Error, CustomStringConvertible {
    case diffIDMismatch(blob: Digest, expected: Digest, actual: String)

    public var description: String {
        switch self {
        case .diffIDMismatch(let blob, let expected, let actual):
            return "layer \(blob.short) decodes to \(actual), but the image config promises \(expected); the image is inconsistent"
        }
    }
}
