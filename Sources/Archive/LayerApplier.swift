import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Decompresses, hashes and extracts OCI layer tars.
///
/// Two threads: a decompression+hashing thread feeds ~1 MiB buffers through a bounded queue to the
/// calling thread, which parses the tar and writes files. Extraction is *not* atomic: on error the
/// root may contain a partial layer. Callers should extract into a fresh temporary directory and
/// rename it into place on success (and delete it on failure).
public enum LayerApplier {
    /// Decompresses, hashes and extracts the layer file at `path` into `root` (which must exist). `name` (e.g. the
    /// layer's digest, else `path`) identifies the layer in errors.
    public static func apply(
        layerAt path: String, compression: LayerCompression, to root: String, options: ApplyOptions = ApplyOptions(),
        name: String? = nil, limit: DecompressionLimit = .configured
    ) throws -> ApplyResult {
        try apply(try DecodedLayer(layerAt: path, compression: compression, name: name, limit: limit), to: root, options: options)
    }

    /// Extracts a layer whose decompression is already under way.
    public static func apply(_ layer: DecodedLayer, to root: String, options: ApplyOptions = ApplyOptions()) throws -> ApplyResult {
        try extract(from: layer.pipe, digest: layer.digest, root: root, options: options)
    }

    /// Same as `apply(layerAt:)` reading the blob from a pull-style chunk source (e.g. a download).
    public static func apply(
        from source: ChunkSource, compression: LayerCompression, to root: String, options: ApplyOptions = ApplyOptions(),
        name: String = "stream", limit: DecompressionLimit = .configured
    ) throws -> ApplyResult {
        let pipe = ChunkPipe()
        let digest = DigestBox()
        DecompressionPipeline.startProducer(
            input: .chunks(source), compression: compression, limit: limit, layer: name, pipe: pipe, result: digest)
        return try extract(from: pipe, digest: digest, root: root, options: options)
    }

    static func extract(from pipe: ChunkPipe, digest: DigestBox, root: String, options: ApplyOptions) throws -> ApplyResult {
        let rootDirectory: RootDirectory
        do {
            rootDirectory = try RootDirectory(path: root)
        } catch {
            pipe.cancel()
            pipe.waitForProducerExit()
            throw error
        }
        let extractor = Extractor(root: rootDirectory, options: options)
        do {
            let reader = TarReader(source: PipeByteSource(pipe))
            while let header = try reader.next() {
                try extractor.extract(header, from: reader)
            }
            try reader.drain()  // hash everything after the end-of-archive blocks too
            try extractor.finish()
        } catch {
            // Keep consuming for a while so a corrupt compressed stream is reported as the root cause rather
            // than the tar error it led to; but not a whole decompression bomb.
            drain(pipe, upTo: 64 << 20)
            pipe.cancel()
            pipe.waitForProducerExit()
            if let failure = pipe.failure { throw failure }
            throw error
        }
        pipe.waitForProducerExit()
        if let failure = pipe.failure { throw failure }
        guard let result = digest.value else {
            throw ArchiveError(.truncated(detail: "decompression did not complete"))
        }
        return ApplyResult(
            diffID: result.diffID, uncompressedSize: result.size, entries: extractor.entries,
            skipped: extractor.skipped)
    }
}

extension LayerApplier {
    /// Consumes the remaining decoded chunks until the producer finishes (or fails).
    static func drain(_ pipe: ChunkPipe, upTo limit: Int) {
        var drained = 0
        while drained < limit {
            do {
                guard let chunk = try pipe.pop() else { return }
                drained += chunk.count
                pipe.recycle(chunk)
            } catch {
                return
            }
        }
    }
}

/// Computes diffIDs without extracting.
public enum LayerDigester {
    /// diffID (`sha256:<hex>` of the uncompressed tar) and uncompressed size of the layer file at `path`.
    public static func diffID(
        ofLayerAt path: String, compression: LayerCompression, name: String? = nil, limit: DecompressionLimit = .configured
    ) throws -> (diffID: String, size: Int64) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw ArchiveError.io("open layer", path) }
        defer { close(fd) }
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
        let d = try DecompressionPipeline.digest(
            input: .fileDescriptor(fd, path: path), compression: compression, limit: limit, layer: name ?? path)
        return (d.diffID, d.size)
    }

    public static func diffID(
        of source: ChunkSource, compression: LayerCompression, name: String = "stream", limit: DecompressionLimit = .configured
    ) throws -> (diffID: String, size: Int64) {
        let d = try DecompressionPipeline.digest(input: .chunks(source), compression: compression, limit: limit, layer: name)
        return (d.diffID, d.size)
    }
}

/// Decompresses a whole in-memory gzip stream (any number of members, trailing zero padding allowed), stopping
/// once `limit` bytes are out. For small verified pieces such as an eStargz TOC or chunk.
public func gunzip(_ input: [UInt8], limit: Int = .max) throws -> [UInt8] {
    let pending = Mutex<[UInt8]?>(input)
    let decoder = GzipDecoder(InputReader(.chunks(ChunkSource { pending.withLock { bytes in defer { bytes = nil }; return bytes } })))
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1 << 18)
    while out.count < limit {
        let produced = try buffer.withUnsafeMutableBytes { try decoder.read(into: $0) }
        out.append(contentsOf: buffer[0..<produced])
        if produced < buffer.count { break }
    }
    return out
}
