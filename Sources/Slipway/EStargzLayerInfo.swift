import EStargz
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
        let footer = try await source.readRange(layer, offset: layer.size - Int64(estargzFooterSize), length: estargzFooterSize)
        let tocOffset = try parseEStargzFooter(footer)
        guard tocOffset >= 0, tocOffset < layer.size else { throw EStargzError.invalidFooter("TOC offset \(tocOffset) outside the layer") }
        let tail = try await source.readRange(layer, offset: tocOffset, length: Int(layer.size - tocOffset))
        let reader = try EStargzReader(blobSize: layer.size, layer: layer.digest.description) { offset, count in
            guard offset >= tocOffset, offset + Int64(count) <= layer.size else {
                throw EStargzError.invalidFooter("read outside the TOC region")
            }
            let start = Int(offset - tocOffset)
            return Array(tail[start..<start + count])
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
