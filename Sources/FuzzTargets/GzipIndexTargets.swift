import GzipIndex
import OCI

enum GzipIndexTargets {
    /// A layer blob, indexed as `slipway index` and `serve --index` do, then read back through its own index as a
    /// lazy mount reads it: an index Slipway built must always open, and every chunk must decode to its digest.
    static func layer(_ input: [UInt8]) {
        let descriptor = Descriptor(mediaType: MediaType.ociLayerGzip, digest: Digest.sha256(of: input), size: Int64(input.count))
        var offset = 0
        let next: () throws -> [UInt8]? = {
            guard offset < input.count else { return nil }
            let end = min(input.count, offset + 4096)
            defer { offset = end }
            return Array(input[offset..<end])
        }
        guard let index = try? GzipIndexBuilder.build(layer: descriptor, spanSize: 1024, chunkSize: 4096, next: next) else { return }
        let layer: IndexedLayer
        do {
            layer = try IndexedLayer(index: index, layer: descriptor)
        } catch {
            preconditionFailure("gzip-index: an index built from the layer does not open: \(error)")
        }
        for chunk in layer.allChunks.prefix(64) {
            let compressed = Array(input[Int(chunk.offset)..<Int(chunk.nextOffset)])
            guard let bytes = try? layer.decode([chunk], compressed: compressed, from: chunk.offset).first else {
                preconditionFailure("gzip-index: \(chunk.name) at \(chunk.chunkOffset) does not decode through the index built from its layer")
            }
            precondition(Digest.sha256(of: bytes).description == chunk.chunkDigest, "gzip-index: \(chunk.name) decodes to other bytes")
        }
    }

    /// An index document from anywhere (a registry's referrer), opened against the layer it names and read with
    /// whatever bytes come back: it must be refused or read, never trap.
    static func document(_ input: [UInt8]) {
        guard let index = try? GzipIndex.decode(json: input), let layer = try? IndexedLayer(index: index, layer: index.layer) else { return }
        for chunk in layer.allChunks.prefix(16) where chunk.nextOffset - chunk.offset <= 1 << 20 {
            let compressed = [UInt8](repeating: 0x5a, count: Int(chunk.nextOffset - chunk.offset))
            _ = try? layer.decode([chunk], compressed: compressed, from: chunk.offset)
        }
    }
}
