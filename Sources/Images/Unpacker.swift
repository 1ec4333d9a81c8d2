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

/// Turns layers in the store into root filesystems: a flat directory (`unpack`) or one cached directory per
/// layer diffID for overlay mounts.
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
        _ image: ResolvedImage, to directory: String, options: ApplyOptions = ApplyOptions(),
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
                progress(.layerStarted(index: position, of: image.layers.count, layer.descriptor, .extract))
                let layerStart = ContinuousClock.now
                let decoded = try decodingAhead ?? DecodedLayer(
                    layerAt: store.blobPath(layer.descriptor.digest), compression: compression(of: layer.descriptor),
                    name: layer.descriptor.digest.description)
                decodingAhead = nil
                // The next layer decompresses while this one's files are created: extraction is mostly kernel
                // work on one core, decompression user work on the other.
                if position + 1 < image.layers.count, store.hasBlob(image.layers[position + 1].descriptor) {
                    let following = image.layers[position + 1].descriptor
                    decodingAhead = try DecodedLayer(
                        layerAt: store.blobPath(following.digest), compression: compression(of: following), readAhead: Self.readAhead,
                        name: following.digest.description)
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
    public func cacheLayers(_ image: ResolvedImage) async throws -> Int {
        let lock = try await store.lockForWriting()
        defer { lock.release() }
        var extracted = 0
        for (position, layer) in image.layers.enumerated() {
            if try await cacheLayer(layer.descriptor, diffID: layer.diffID, position: position, of: image.layers.count) { extracted += 1 }
        }
        return extracted
    }

    /// Extracts one layer whose blob is in the store into the per-layer cache; false when it was there already.
    /// Call with the store's write lock held.
    public func cacheLayer(_ layer: Descriptor, diffID: Digest, position: Int, of count: Int) async throws -> Bool {
        try await store.ensureLayerDirectory(diffID) { temporary in
            progress(.layerStarted(index: position, of: count, layer, .extract))
            let result = try await apply(layer, to: temporary, options: ApplyOptions(whiteouts: .overlay))
            return try Digest(result.diffID)
        }
    }

    /// Decoded bytes a layer may hold ahead of its extraction (memory is bounded by this per layer in flight).
    static let readAhead = 64 << 20

    private func apply(_ layer: Descriptor, to root: String, options: ApplyOptions) async throws -> ApplyResult {
        let path = store.blobPath(layer.digest)
        let compression = compression(of: layer)
        let name = layer.digest.description
        return try await runBlocking {
            try LayerApplier.apply(layerAt: path, compression: compression, to: root, options: options, name: name)
        }
    }

    /// The media type's compression, except that an uncompressed type is checked against the bytes: some tools
    /// label gzip content as plain `tar`.
    func compression(of layer: Descriptor) -> LayerCompression {
        switch MediaType.layerCompression(layer.mediaType) {
        case .gzip: return .gzip
        case .zstd: return .zstd
        default:
            guard let handle = FileHandle(forReadingAtPath: store.blobPath(layer.digest)) else { return .none }
            defer { try? handle.close() }
            return LayerCompression.detect([UInt8]((try? handle.read(upToCount: 4)) ?? Data()))
        }
    }
}

public struct UnpackReport: Sendable, Codable {
    public var directory: String
    public var layers: Int
    public var unpackedBytes: Int64
    public var seconds: Double
}
