import Archive
import ContentStore
import EStargz
import Foundation
import OCI

/// Converts an image whose blobs are in the store to eStargz: every layer that is not eStargz yet is decoded,
/// rewritten by `EStargzWriter` into a new blob in the store, and annotated with its TOC digest and uncompressed
/// size; the config's diffIDs follow. Layers already in eStargz are kept as they are.
public struct EStargzConverter: Sendable {
    public let store: ContentStore
    public var options: EStargzWriterOptions
    public var progress: ProgressHandler

    public init(store: ContentStore, options: EStargzWriterOptions = EStargzWriterOptions(), progress: @escaping ProgressHandler = { _ in }) {
        self.store = store
        self.options = options
        self.progress = progress
    }

    static let parallelLayers = 2

    struct ConvertedLayer: Sendable {
        var position: Int
        var descriptor: Descriptor
        var diffID: OCI.Digest
    }

    public struct Report: Sendable, Codable {
        public var manifestDigest: String
        public var convertedLayers: Int
        public var keptLayers: Int
        public var seconds: Double
    }

    /// Writes the converted image to the store under `name` and returns its manifest descriptor.
    public func convert(_ image: ResolvedImage, name: String) async throws -> (Descriptor, Report) {
        let started = ContinuousClock.now
        let lock = try await store.lockForWriting()
        defer { lock.release() }
        // Layers are independent: two convert at once (each also decodes on a thread of its own).
        var results: [ConvertedLayer?] = Array(repeating: nil, count: image.layers.count)
        var converted = 0
        try await withThrowingTaskGroup(of: ConvertedLayer.self) { group in
            var running = 0
            for (position, layer) in image.layers.enumerated() {
                if layer.descriptor.annotations?[tocDigestAnnotation] != nil {
                    results[position] = ConvertedLayer(position: position, descriptor: layer.descriptor, diffID: layer.diffID)
                    continue
                }
                if running == Self.parallelLayers, let done = try await group.next() {
                    results[done.position] = done
                    running -= 1
                }
                converted += 1
                running += 1
                group.addTask { [store, options, progress] in
                    progress(.layerExtracting(index: position, of: image.layers.count, layer.descriptor))
                    let layerStart = ContinuousClock.now
                    let (descriptor, diffID) = try await runOnDedicatedThread {
                        try Self.convertLayer(layer.descriptor, position: position, expectedDiffID: layer.diffID, store: store, options: options)
                    }
                    progress(.layerExtracted(index: position, layer.descriptor, seconds: layerStart.secondsElapsed))
                    return ConvertedLayer(position: position, descriptor: descriptor, diffID: diffID)
                }
            }
            while let done = try await group.next() { results[done.position] = done }
        }
        let layers = results.map { $0!.descriptor }
        let diffIDs = results.map { $0!.diffID }
        let configBytes = try Self.rewriteConfig(image.configBytes, diffIDs: diffIDs)
        let config = try store.writeBlob(configBytes, mediaType: MediaType.ociConfig)
        let manifest = Manifest(config: config, layers: layers, annotations: image.manifest.annotations)
        let descriptor = try store.writeBlob(Array(try JSONEncoder.canonical.encode(manifest)), mediaType: MediaType.ociManifest)
        try store.setImage(named: name, to: descriptor)
        return (descriptor, Report(
            manifestDigest: descriptor.digest.description, convertedLayers: converted, keptLayers: image.layers.count - converted,
            seconds: started.secondsElapsed))
    }

    /// Rewrites one layer; the input must decode to the diffID the image config promises.
    static func convertLayer(
        _ layer: Descriptor, position: Int, expectedDiffID: Digest, store: ContentStore, options: EStargzWriterOptions
    ) throws
        -> (Descriptor, Digest)
    {
        let compression: LayerCompression = switch MediaType.layerCompression(layer.mediaType) {
        case .gzip: .gzip
        case .zstd: .zstd
        default: .none
        }
        let decoded = try DecodedLayer(layerAt: store.blobPath(layer.digest), compression: compression)
        let temporary = store.temporaryPath()
        guard FileManager.default.createFile(atPath: temporary, contents: nil), let output = FileHandle(forWritingAtPath: temporary) else {
            throw StoreError.io(path: temporary, operation: "create", errno: errno)
        }
        do {
            let reader = decoded.tarReader()
            let result = try EStargzWriter(options: options) { try output.write(contentsOf: $0) }.convert(reader)
            try reader.drain()
            try output.close()
            let (inputDiffID, _) = try decoded.finishedDigest()
            guard inputDiffID == expectedDiffID.description else {
                throw UnpackError.diffIDMismatch(layer: position, expected: expectedDiffID, actual: inputDiffID)
            }
            let descriptor = Descriptor(
                mediaType: MediaType.ociLayerGzip, digest: result.blobDigest, size: result.blobSize, annotations: result.annotations)
            try store.adopt(temporary, as: descriptor)
            return (descriptor, result.diffID)
        } catch {
            try? output.close()
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        }
    }

    /// The config as it was (unknown fields kept), with the new diffIDs.
    static func rewriteConfig(_ bytes: [UInt8], diffIDs: [Digest]) throws -> [UInt8] {
        guard var object = try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
            throw OCIError.malformedDocument(mediaType: MediaType.ociConfig, reason: "not a JSON object")
        }
        var rootfs = object["rootfs"] as? [String: Any] ?? ["type": "layers"]
        rootfs["diff_ids"] = diffIDs.map(\.description)
        object["rootfs"] = rootfs
        return Array(try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
    }
}
