import ContentStore
import Foundation
import OCI
import Registry

/// Where an image's bytes come from. Remote registries and OCI layouts (the store included) both satisfy it, so
/// every operation — pull, copy, unpack, and later convert and mount — composes with every origin.
public protocol ImageSource: Sendable {
    /// What the user named, for messages.
    var name: String { get }
    /// The manifest or index the location names, verified.
    func rootDocument() async throws -> FetchedManifest
    /// A manifest, index or config by descriptor, verified against its digest.
    func document(_ descriptor: Descriptor) async throws -> [UInt8]
    /// Streams a blob into `sink`; the sink's digest is checked by the caller.
    func fetchBlob(_ descriptor: Descriptor, into sink: any BlobSink) async throws
    /// A file already holding the verified blob on this machine, when there is one (no transfer needed).
    func localBlobPath(_ descriptor: Descriptor) -> String?
    /// `length` bytes of a blob from `offset`, unverified: for formats that verify their own parts (eStargz).
    func readRange(_ descriptor: Descriptor, offset: Int64, length: Int) async throws -> [UInt8]
    /// Several non-overlapping ranges of a blob, unverified; a registry answers them in one request.
    func readRanges(_ descriptor: Descriptor, ranges: [Range<Int64>]) async throws -> [[UInt8]]
    /// Artifacts of `artifactType` whose `subject` is the manifest `subject` (OCI referrers), newest last.
    func referrers(of subject: Digest, artifactType: String) async throws -> [Descriptor]
}

extension ImageSource {
    public func referrers(of subject: Digest, artifactType: String) async throws -> [Descriptor] { [] }

    public func readRanges(_ descriptor: Descriptor, ranges: [Range<Int64>]) async throws -> [[UInt8]] {
        var result: [[UInt8]] = []
        for range in ranges { result.append(try await readRange(descriptor, offset: range.lowerBound, length: range.count)) }
        return result
    }
}

extension ImageSource {
    /// Brings a blob into `store` unless it is there (see `ContentStore.fetch`).
    public func fetchBlob(_ descriptor: Descriptor, into store: ContentStore, progress: @escaping ProgressHandler) async throws -> Int64 {
        try await store.fetch(descriptor, progress: progress) { sink in try await fetchBlob(descriptor, into: sink) }
    }
}

extension Layer {
    /// Brings the layer's blob into `store` unless it is there (see `ContentStore.fetch`).
    public func fetch(into store: ContentStore, progress: @escaping ProgressHandler) async throws -> Int64 {
        try await store.fetch(descriptor, progress: progress) { sink in try await fetch(into: sink) }
    }
}

extension ContentStore {
    /// Brings a blob into the store unless it is there: verified, and fetched once however many processes ask at
    /// the same time (the others wait for it). Returns the bytes transferred (0 when it was there or another
    /// process fetched it).
    package func fetch(
        _ descriptor: Descriptor, progress: @escaping ProgressHandler, from transfer: (any BlobSink) async throws -> Void
    ) async throws -> Int64 {
        if hasBlob(descriptor) { return 0 }
        let outcome = try await ingest(descriptor, onWait: { progress(.blobWaiting(descriptor.digest)) }) { sink in
            try await transfer(ReportingSink(sink, digest: descriptor.digest, progress: progress))
        }
        if case .fetched(let bytes) = outcome { return bytes }
        return 0
    }
}

/// One platform's image, resolved from a source: its manifest and config, parsed and as bytes, and its layers,
/// whose bytes come from that source.
public struct ResolvedImage: Image {
    /// Where the layers' bytes come from.
    public var source: any ImageSource
    public var manifestDescriptor: Descriptor
    public var manifestBytes: [UInt8]
    public var manifest: Manifest
    public var configBytes: [UInt8]
    public var config: ImageConfig
    /// The index the manifest was selected from, if the location named one.
    public var index: FetchedManifest?

    public var name: String { source.name }

    /// Layers paired with the diffIDs the config promises for them.
    public var layers: [any Layer] {
        zip(manifest.layers, config.rootfs.diff_ids).map { SourceLayer(descriptor: $0, diffID: $1, source: source) }
    }

    public var totalLayerBytes: Int64 { manifest.layers.reduce(0) { $0 + $1.size } }
}

extension ImageSource {
    /// Resolves the image for `platform` (default: this machine's) from a manifest or an index.
    public func resolve(platform: Platform = .host) async throws -> ResolvedImage {
        let root = try await rootDocument()
        var manifestDescriptor = root.descriptor
        var manifestBytes = root.bytes
        var index: FetchedManifest?
        let manifest: Manifest
        switch root.document {
        case .manifest(let found):
            manifest = found
        case .index(let found):
            index = root
            let candidates = found.manifests.filter { MediaType.isManifest($0.mediaType) }
            guard let chosen = candidates.first(where: { $0.platform?.satisfies(platform) ?? false })
                ?? (candidates.count == 1 && candidates[0].platform == nil ? candidates[0] : nil)
            else {
                throw OCIError.noMatchingPlatform(
                    wanted: platform.description, available: found.manifests.compactMap { $0.platform?.description })
            }
            manifestDescriptor = chosen
            manifestBytes = try await document(chosen)
            guard case .manifest(let selected) = try ManifestDocument.decode(manifestBytes, contentType: chosen.mediaType) else {
                throw OCIError.malformedDocument(mediaType: chosen.mediaType, reason: "index entry \(chosen.digest) is not an image manifest")
            }
            manifest = selected
        }
        let configBytes = try await document(manifest.config)
        let config: ImageConfig
        do {
            config = try JSONDecoder().decode(ImageConfig.self, from: Data(configBytes))
        } catch let error as DecodingError {
            throw OCIError.malformedDocument(mediaType: manifest.config.mediaType, reason: "\(error)")
        }
        guard config.rootfs.diff_ids.count == manifest.layers.count else {
            throw OCIError.malformedDocument(
                mediaType: manifest.config.mediaType,
                reason: "config lists \(config.rootfs.diff_ids.count) diffIDs for \(manifest.layers.count) layers")
        }
        for layer in manifest.layers where MediaType.layerCompression(layer.mediaType) == nil {
            throw OCIError.unsupportedMediaType(layer.mediaType)
        }
        return ResolvedImage(
            source: self,
            manifestDescriptor: Descriptor(mediaType: manifestDescriptor.mediaType, digest: manifestDescriptor.digest, size: manifestDescriptor.size),
            manifestBytes: manifestBytes, manifest: manifest, configBytes: configBytes, config: config, index: index)
    }
}
