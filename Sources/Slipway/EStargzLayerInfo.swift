import EStargz
import Images
import OCI

/// What `inspect` shows of an eStargz layer, read from its footer and TOC only (two range reads, no full fetch).
public struct EStargzLayerInfo: Sendable, Codable {
    public var tocDigest: String
    public var files: Int
    public var chunks: Int
    /// Compressed bytes before the prefetch landmark: what a lazy mount fetches up front (0 when none).
    public var prefetchBytes: Int64

    /// Reads the layer's footer and TOC through `source` and verifies the TOC against the layer's annotation.
    public static func read(_ layer: Descriptor, from source: any ImageSource) async throws -> EStargzLayerInfo? {
        guard let annotation = layer.annotations?[tocDigestAnnotation], layer.size >= Int64(estargzFooterSize) else { return nil }
        // Where the TOC is and how large, checked against the reader's bounds before the TOC is read.
        let tailSize = Int(min(layer.size, Int64(estargzFooterSize)))
        let footer = try await source.readRange(layer, offset: layer.size - Int64(tailSize), length: tailSize)
        let tocOffset: Int64
        do {
            tocOffset = try EStargzReader.locateTOC(blobSize: layer.size, footerTail: footer).tocOffset
        } catch let error as EStargzError {
            throw error.inLayer(layer.digest.description)
        }
        let tail = try await source.readRange(layer, offset: tocOffset, length: Int(layer.size - tocOffset))
        let reader = try EStargzReader(blobSize: layer.size, layer: layer.digest.description) { offset, count in
            // A source may answer short; the reader reports that as truncated.
            guard offset >= tocOffset, offset - tocOffset <= Int64(tail.count) else {
                throw EStargzError.invalidFooter("read at \(offset) outside the TOC region \(tocOffset)..<\(layer.size)")
            }
            let start = Int(offset - tocOffset)
            return Array(tail[start..<(start + min(count, tail.count - start))])
        }
        try reader.verifyTOC(try Digest(annotation))
        let landmarks: Set<String> = [prefetchLandmarkName, noPrefetchLandmarkName]
        let entries = reader.toc.entries.filter { !landmarks.contains($0.name) }
        let prefetch = reader.toc.entries.first { $0.name == prefetchLandmarkName }?.offset ?? 0
        return EStargzLayerInfo(
            tocDigest: annotation, files: entries.filter { $0.type == "reg" }.count,
            chunks: entries.filter { $0.type == "reg" || $0.type == "chunk" }.count, prefetchBytes: prefetch)
    }
}
