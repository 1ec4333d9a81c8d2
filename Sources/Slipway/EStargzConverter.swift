import Archive
import ContentStore
import EStargz
import Foundation
import Images
import OCI

/// Converts an image to eStargz, from any source to any destination, one layer at a time: a layer streams from the
/// source (a local file when there is one, the registry otherwise) through the decoder and `EStargzWriter` into a
/// staging file, goes to the destination, and the staging file goes away. No copy of the source image is kept.
/// Layers already in eStargz are copied as they are; the config's diffIDs follow the new layers.
public struct EStargzConverter: Sendable {
    /// Where converted layers wait for the destination (a rename when the destination is this store).
    public let staging: ContentStore
    public var options: EStargzWriterOptions
    public var prioritized: PrioritizedFiles
    public var allowMissingPrioritizedFiles: Bool
    public var progress: ProgressHandler

    public init(
        staging: ContentStore, options: EStargzWriterOptions = EStargzWriterOptions(), prioritized: PrioritizedFiles = PrioritizedFiles(),
        allowMissingPrioritizedFiles: Bool = false, progress: @escaping ProgressHandler = { _ in }
    ) {
        self.staging = staging
        self.options = options
        self.prioritized = prioritized
        self.allowMissingPrioritizedFiles = allowMissingPrioritizedFiles
        self.progress = progress
    }

    /// Two layers at once: one can download while the other compresses (each compresses on every core).
    static let parallelLayers = 2

    public struct LayerReport: Sendable, Codable {
        public var digest: String
        public var size: Int64
        public var converted: Bool
        public var tocDigest: String?
        /// Bytes before `.prefetch.landmark` (0 when nothing is prioritized).
        public var prefetchBytes: Int64
    }

    public struct Report: Sendable, Codable {
        public var manifestDigest: String
        public var convertedLayers: Int
        public var keptLayers: Int
        public var layers: [LayerReport]
        /// Prioritized paths no layer had (only with `allowMissingPrioritizedFiles`).
        public var missingPrioritizedFiles: [String]
        public var seconds: Double
    }

    private struct LayerOutcome: Sendable {
        var position: Int
        var descriptor: Descriptor
        var diffID: Digest
        var report: LayerReport
        /// Offered prioritized paths this layer did not have.
        var missing: Set<String>
    }

    /// Converts `image` (resolved from `source`) and writes it to `destination`; returns the new manifest's
    /// descriptor. The manifest is written only after every layer is in place.
    public func convert(_ image: ResolvedImage, from source: any ImageSource, to destination: any ImageDestination) async throws
        -> (Descriptor, Report)
    {
        let started = ContinuousClock.now
        let lease = try await destination.acquireWriteLease()
        defer { lease?.release() }
        let stagingLease = try await staging.lockForWriting()
        defer { stagingLease.release() }

        var outcomes: [LayerOutcome?] = Array(repeating: nil, count: image.layers.count)
        try await withThrowingTaskGroup(of: LayerOutcome.self) { group in
            var running = 0
            for (position, layer) in image.layers.enumerated() {
                if running == Self.parallelLayers, let done = try await group.next() {
                    outcomes[done.position] = done
                    running -= 1
                }
                running += 1
                group.addTask {
                    do {
                        return try await convertOrKeep(layer.descriptor, diffID: layer.diffID, position: position, of: image.layers.count,
                                                       source: source, destination: destination)
                    } catch {
                        throw ConvertError.layer(position: position, digest: layer.descriptor.digest, underlying: error)
                    }
                }
            }
            while let done = try await group.next() { outcomes[done.position] = done }
        }
        let layers = outcomes.map { $0! }

        // A path is missing when every layer it was offered to lacks it.
        var missing: [String] = []
        for entry in prioritized.entries where !missing.contains(entry.path) {
            let offered = layers.filter { entry.layerIndex == nil || entry.layerIndex == $0.position }
            if offered.allSatisfy({ $0.missing.contains(entry.path) }) { missing.append(entry.path) }
        }
        if !missing.isEmpty && !allowMissingPrioritizedFiles { throw ConvertError.missingPrioritizedFiles(missing) }

        let configBytes = try Self.rewriteConfig(image.configBytes, diffIDs: layers.map(\.diffID))
        let config = Descriptor(mediaType: MediaType.ociConfig, digest: .sha256(of: configBytes), size: Int64(configBytes.count))
        try await destination.putDocument(configBytes, descriptor: config)
        let manifest = Manifest(config: config, layers: layers.map(\.descriptor), annotations: image.manifest.annotations)
        let manifestBytes = Array(try JSONEncoder.canonical.encode(manifest))
        let descriptor = Descriptor(mediaType: MediaType.ociManifest, digest: .sha256(of: manifestBytes), size: Int64(manifestBytes.count))
        try await destination.putDocument(manifestBytes, descriptor: descriptor)
        try await destination.tag(descriptor, bytes: manifestBytes)
        let converted = layers.filter(\.report.converted).count
        return (descriptor, Report(
            manifestDigest: descriptor.digest.description, convertedLayers: converted, keptLayers: layers.count - converted,
            layers: layers.map(\.report), missingPrioritizedFiles: missing, seconds: started.secondsElapsed))
    }

    private func convertOrKeep(
        _ layer: Descriptor, diffID: Digest, position: Int, of count: Int, source: any ImageSource, destination: any ImageDestination
    ) async throws -> LayerOutcome {
        // An eStargz layer is kept as it is, unless files are to be prioritized: then it is converted again
        // (the writer drops its old TOC and landmarks), as the reference does.
        if let toc = layer.annotations?[tocDigestAnnotation], prioritized.isEmpty {
            _ = try await destination.putBlob(layer, from: source, progress: progress)
            return LayerOutcome(
                position: position, descriptor: layer, diffID: diffID,
                report: LayerReport(digest: layer.digest.description, size: layer.size, converted: false, tocDigest: toc, prefetchBytes: 0),
                missing: [])
        }
        progress(.layerStarted(index: position, of: count, layer, .convert))
        let layerStart = ContinuousClock.now
        var options = options
        let offered = prioritized.paths(forLayer: position)
        options.prioritizedFiles = offered
        options.allowMissingPrioritizedFiles = true
        options.spoolDirectory = "\(staging.root)/ingest"
        let stagedPath = staging.temporaryPath()
        let partial = PartialOutput.register(stagedPath)
        defer {
            try? FileManager.default.removeItem(atPath: stagedPath)
            partial.end()
        }

        let input = SourceLayer(descriptor: layer, diffID: diffID, source: source)
        let result = try await input.withUncompressedTar { [options] decoded in
            try Self.writeEStargz(from: decoded, to: stagedPath, options: options)
        }

        let descriptor = Descriptor(mediaType: MediaType.ociLayerGzip, digest: result.blobDigest, size: result.blobSize, annotations: result.annotations)
        if let layout = destination as? LayoutDestination, layout.store.root == staging.root {
            if !staging.hasBlob(descriptor) { try staging.adopt(stagedPath, as: descriptor) }
        } else {
            _ = try await destination.putBlob(descriptor, from: StagedBlobSource(files: [descriptor.digest: stagedPath]), progress: progress)
        }
        progress(.layerFinished(index: position, layer, .convert, seconds: layerStart.secondsElapsed))
        return LayerOutcome(
            position: position, descriptor: descriptor, diffID: result.diffID,
            report: LayerReport(
                digest: descriptor.digest.description, size: descriptor.size, converted: true, tocDigest: result.tocDigest.description,
                prefetchBytes: result.prefetchSize),
            missing: Set(result.missingPrioritizedFiles))
    }

    /// Writes the eStargz form of `decoded` to `path`, reading the tar to its end.
    static func writeEStargz(from decoded: DecodedLayer, to path: String, options: EStargzWriterOptions) throws -> EStargzResult {
        guard FileManager.default.createFile(atPath: path, contents: nil), let output = FileHandle(forWritingAtPath: path) else {
            throw StoreError.io(path: path, operation: "create", errno: errno)
        }
        defer { try? output.close() }
        let reader = decoded.tarReader()
        let result = try EStargzWriter(options: options) { try output.write(contentsOf: $0) }.convert(reader)
        try reader.drain()
        return result
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
