import Archive
import Blocking
import ContentStore
import Foundation
import OCI

public enum UnpackError: Error, CustomStringConvertible {
    case destinationNotEmpty(String)
    case diffIDMismatch(layer: Int, expected: Digest, actual: String)

    public var description: String {
        switch self {
        case .destinationNotEmpty(let path): return "\(path) exists and is not an empty directory; choose a new directory"
        case .diffIDMismatch(let layer, let expected, let actual):
            return "layer \(layer + 1) unpacks to \(actual), but the image config promises \(expected); the image is inconsistent"
        }
    }
}

/// Turns an image's layers, from any source, into root filesystems through the store (a layer's blob is brought
/// into it first when it is not there): a flat directory (`unpack`) or one cached directory per layer diffID for
/// overlay mounts.
public struct Unpacker: Sendable {
    public let store: ContentStore
    public var progress: ProgressHandler

    public init(store: ContentStore, progress: @escaping ProgressHandler = { _ in }) {
        self.store = store
        self.progress = progress
    }

    /// Applies the image's layers in order into `directory`. Layer `i` starts as soon as `ready(i)` returns, so a
    /// pull running alongside feeds extraction as blobs land. The tree is built beside `directory` and renamed
    /// into place at the end: an interrupted unpack leaves no half tree under the requested name.
    public func unpack(
        _ image: any Image, to directory: String, options: ApplyOptions = ApplyOptions(),
        ready: @Sendable (Int) async throws -> Void = { _ in }
    ) async throws -> UnpackReport {
        let started = ContinuousClock.now
        let target = URL(fileURLWithPath: directory).standardizedFileURL.path
        let fileManager = FileManager.default
        var isDirectory: ObjCBool = false
        if fileManager.fileExists(atPath: target, isDirectory: &isDirectory) {
            guard isDirectory.boolValue, (try fileManager.contentsOfDirectory(atPath: target)).isEmpty else {
                throw UnpackError.destinationNotEmpty(target)
            }
        }
        let parent = (target as NSString).deletingLastPathComponent
        try fileManager.createDirectory(atPath: parent, withIntermediateDirectories: true)
        let staging = "\(parent)/.\((target as NSString).lastPathComponent).slipway-partial"
        try? fileManager.removeItem(atPath: staging)
        let partial = PartialOutput.register(staging)
        defer { partial.end() }
        try fileManager.createDirectory(atPath: staging, withIntermediateDirectories: false)
        var unpackedBytes: Int64 = 0
        do {
            var decodingAhead: DecodedLayer?
            for (position, layer) in image.layers.enumerated() {
                try await ready(position)
                _ = try await layer.fetch(into: store, progress: progress)
                progress(.layerStarted(index: position, of: image.layers.count, layer.descriptor, .extract))
                let layerStart = ContinuousClock.now
                let decoded: DecodedLayer
                if let ahead = decodingAhead {
                    decoded = ahead
                } else {
                    decoded = try DecodedLayer(
                        layerAt: store.blobPath(layer.descriptor.digest), compression: try await compression(of: layer),
                        name: layer.descriptor.digest.description)
                }
                decodingAhead = nil
                // The next layer decompresses while this one's files are created: extraction is mostly kernel
                // work on one core, decompression user work on the other.
                if position + 1 < image.layers.count, store.hasBlob(image.layers[position + 1].descriptor) {
                    let following = image.layers[position + 1]
                    decodingAhead = try DecodedLayer(
                        layerAt: store.blobPath(following.descriptor.digest), compression: try await compression(of: following),
                        readAhead: Self.readAhead, name: following.descriptor.digest.description)
                }
                let result = try await runBlocking { try LayerApplier.apply(decoded, to: staging, options: options) }
                guard result.diffID == layer.diffID.description else {
                    throw UnpackError.diffIDMismatch(layer: position, expected: layer.diffID, actual: result.diffID)
                }
                unpackedBytes += result.uncompressedSize
                progress(.layerFinished(index: position, layer.descriptor, .extract, seconds: layerStart.secondsElapsed))
            }
            if fileManager.fileExists(atPath: target) { try fileManager.removeItem(atPath: target) }
            try fileManager.moveItem(atPath: staging, toPath: target)
        } catch {
            try? fileManager.removeItem(atPath: staging)
            throw error
        }
        return UnpackReport(directory: target, layers: image.layers.count, unpackedBytes: unpackedBytes, seconds: started.secondsElapsed)
    }

    /// Extracts every layer of the image into the per-layer cache (overlay whiteouts), skipping cached ones.
    public func cacheLayers(_ image: any Image) async throws -> Int {
        let lock = try await store.lockForWriting()
        defer { lock.release() }
        var extracted = 0
        for (position, layer) in image.layers.enumerated() {
            if try await cacheLayer(layer, position: position, of: image.layers.count) { extracted += 1 }
        }
        return extracted
    }

    /// Extracts one layer into the per-layer cache, bringing its blob into the store first when it is not there;
    /// false when the layer was cached already. Call with the store's write lock held.
    public func cacheLayer(_ layer: any Layer, position: Int, of count: Int) async throws -> Bool {
        try await store.ensureLayerDirectory(layer.diffID) { temporary in
            _ = try await layer.fetch(into: store, progress: progress)
            progress(.layerStarted(index: position, of: count, layer.descriptor, .extract))
            let result = try await apply(layer, to: temporary, options: ApplyOptions(whiteouts: .overlay))
            return try Digest(result.diffID)
        }
    }

    /// Decoded bytes a layer may hold ahead of its extraction (memory is bounded by this per layer in flight).
    static let readAhead = 64 << 20

    private func apply(_ layer: any Layer, to root: String, options: ApplyOptions) async throws -> ApplyResult {
        let path = store.blobPath(layer.descriptor.digest)
        let compression = try await compression(of: layer)
        let name = layer.descriptor.digest.description
        return try await runBlocking {
            try LayerApplier.apply(layerAt: path, compression: compression, to: root, options: options, name: name)
        }
    }

    /// The store as a source: the unpacker reads every layer from the store, whatever image it came from.
    private var storeSource: LayoutImageSource { LayoutImageSource(store: store, imageName: nil) }

    /// The compression of a layer whose blob is in the store (decided as for every layer, see `LayerCompression.of`).
    private func compression(of layer: any Layer) async throws -> LayerCompression {
        try await LayerCompression.of(SourceLayer(descriptor: layer.descriptor, diffID: layer.diffID, source: storeSource))
    }
}

public struct UnpackReport: Sendable, Codable {
    public var directory: String
    public var layers: Int
    public var unpackedBytes: Int64
    public var seconds: Double
}
