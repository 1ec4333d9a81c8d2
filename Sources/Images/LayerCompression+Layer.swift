import Archive
import Blocking
import OCI

extension LayerCompression {
    /// How `layer`'s blob is compressed, decided in one place for every consumer: the media type says, except that
    /// a blob labelled uncompressed is checked against its first bytes, because some tools label gzip content as
    /// plain `tar` (an image that unpacks must also convert and mount).
    public static func of(_ layer: any Layer) async throws -> LayerCompression {
        switch MediaType.layerCompression(layer.descriptor.mediaType) {
        case .gzip: return .gzip
        case .zstd: return .zstd
        case .uncompressed, nil:
            let probe = min(layer.descriptor.size, 4)
            guard probe > 0 else { return .none }
            if let path = layer.localFile {
                return detect(try await runBlocking { try readFileRange(at: path, offset: 0, length: Int(probe)) })
            }
            return detect(try await layer.read(ranges: [0..<probe]).first ?? [])
        }
    }
}
