import Archive
import ContentStore
import Foundation
import OCI

/// Builds images without Docker: layers from tar entries or tar files, compressed and hashed in one pass,
/// written into an OCI layout. Used for demo, test and benchmark images.
public struct ImageBuilder {
    public let store: ContentStore
    public var compression: LayerCompression = .gzip
    private(set) var layers: [(descriptor: Descriptor, diffID: Digest)] = []
    private var history: [ImageConfig.History] = []

    public init(store: ContentStore, compression: LayerCompression = .gzip) {
        self.store = store
        self.compression = compression
    }

    /// Adds a layer made of these entries (regular files carry their contents).
    public mutating func addLayer(_ entries: [(TarHeader, [UInt8])], comment: String) throws {
        var writer = TarWriter()
        for (header, contents) in entries { try writer.write(header, contents: contents) }
        try writer.finish()
        let tar = writer.bytes
        try addLayer(comment: comment) { emit in
            try tar.withUnsafeBytes { try emit($0) }
        }
    }

    /// Adds a layer from an uncompressed tar file, streaming.
    public mutating func addLayer(tarFile path: String, comment: String) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw StoreError.notFound("tar file \(path)") }
        defer { try? handle.close() }
        try addLayer(comment: comment) { emit in
            while let data = try handle.read(upToCount: 4 << 20), !data.isEmpty {
                try data.withUnsafeBytes { try emit($0) }
            }
        }
    }

    private mutating func addLayer(comment: String, produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws {
        let temporary = store.temporaryPath()
        guard let output = FileManager.default.createFile(atPath: temporary, contents: nil) ? FileHandle(forWritingAtPath: temporary) : nil else {
            throw StoreError.io(path: temporary, operation: "create", errno: errno)
        }
        var diffHasher = DigestHasher()
        var blobHasher = DigestHasher()
        var size: Int64 = 0
        func write(_ bytes: [UInt8]) throws {
            blobHasher.update(bytes)
            size += Int64(bytes.count)
            try output.write(contentsOf: bytes)
        }
        do {
            if let compressor = makeCompressor(for: compression) {
                try produce { chunk in
                    diffHasher.update(chunk)
                    try compressor.compress(chunk, output: write)
                }
                try compressor.finish(output: write)
            } else {
                try produce { chunk in
                    diffHasher.update(chunk)
                    try write([UInt8](chunk))
                }
            }
            try output.close()
            let mediaType = switch compression {
            case .gzip: MediaType.ociLayerGzip
            case .zstd: MediaType.ociLayerZstd
            case .none: MediaType.ociLayer
            }
            let descriptor = Descriptor(mediaType: mediaType, digest: blobHasher.finalize(), size: size)
            try store.adopt(temporary, as: descriptor)
            layers.append((descriptor, diffHasher.finalize()))
            history.append(ImageConfig.History(created: Self.epoch, createdBy: comment))
        } catch {
            try? output.close()
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        }
    }

    /// Writes config and manifest and names the image. Returns the manifest descriptor.
    @discardableResult
    public func commit(name: String, config: ImageConfig.ContainerConfig, platform: Platform = .host) throws -> Descriptor {
        let imageConfig = ImageConfig(platform: platform, config: config, diffIDs: layers.map(\.diffID), history: history, created: Self.epoch)
        let configDescriptor = try store.writeBlob(Array(try JSONEncoder.canonical.encode(imageConfig)), mediaType: MediaType.ociConfig)
        let manifest = Manifest(config: configDescriptor, layers: layers.map(\.descriptor))
        let manifestDescriptor = try store.writeBlob(Array(try JSONEncoder.canonical.encode(manifest)), mediaType: MediaType.ociManifest)
        try store.setImage(named: name, to: manifestDescriptor)
        return manifestDescriptor
    }

    /// Fixed timestamps make generated images reproducible: the same inputs give the same digests.
    static let epoch = "2026-01-01T00:00:00Z"
}
