import Blocking
import ContentStore
import EStargz
import Foundation
import GzipIndex
import Images
import OCI
import Registry

#if canImport(Glibc)
import Glibc
#endif

/// An image's gzip indexes (`GzipIndexArtifact`), as found or built.
public struct ImageIndexes: Sendable {
    /// The artifact manifest, when there is one.
    public var artifact: Descriptor?
    public var layers: [Digest: GzipIndex] = [:]
    /// Files a lazy mount fetches first (`slipway index --prioritize`), in order.
    public var prioritizedFiles: [String] = []
    /// Why an index that was found is not used, for the user.
    public var problems: [String] = []
    /// Size of each layer's index blob, by layer digest.
    public var blobSizes: [Digest: Int64] = [:]

    public init() {}
}

/// Finding, building and publishing the gzip indexes of an image.
public enum GzipIndexes {
    /// Largest artifact manifest or prioritized-files blob read.
    static let documentLimit = 4 << 20

    /// The layers an index serves: plain gzip, not eStargz.
    public static func indexableLayers(of image: any Image) -> [any Layer] {
        image.layers.filter { GzipIndexArtifact.isIndexable($0.descriptor) }
    }

    // MARK: Finding

    /// The newest index artifact of the image that its source knows (the store's first, then the registry's),
    /// with the indexes of its layers; every index blob is verified by digest, and each index is checked against
    /// its layer when mounted. A missing, unreadable or foreign index is never an error: the layer is then pulled
    /// whole, and `problems` says why.
    public static func find(for image: ResolvedImage) async -> ImageIndexes {
        var found = ImageIndexes()
        let artifacts: [Descriptor]
        do {
            artifacts = try await image.source.referrers(of: image.manifestDescriptor.digest, artifactType: GzipIndex.artifactType)
        } catch {
            found.problems.append("could not list the image's referrers: \(error)")
            return found
        }
        guard let artifact = artifacts.last else { return found }
        do {
            let manifest = try await artifactManifest(artifact, from: image.source)
            guard manifest.subject?.digest == image.manifestDescriptor.digest else {
                throw GzipIndexError.invalidIndex("artifact \(artifact.digest) names \(manifest.subject?.digest.description ?? "no subject")")
            }
            let wanted = Set(indexableLayers(of: image).map(\.descriptor.digest))
            for blob in manifest.layers {
                if blob.mediaType == GzipIndexArtifact.prioritizedFilesMediaType {
                    found.prioritizedFiles = try decodePrioritizedFiles(try await image.source.document(blob))
                    continue
                }
                guard blob.mediaType == GzipIndex.layerMediaType, let layer = blob.annotations?[GzipIndex.layerAnnotation],
                    let digest = try? Digest(layer), wanted.contains(digest)
                else { continue }
                do {
                    found.layers[digest] = try GzipIndex.decode(try await image.source.document(blob))
                } catch {
                    found.problems.append("index of layer \(digest.short): \(error)")
                }
            }
            found.artifact = artifact
        } catch {
            found.problems.append("gzip index \(artifact.digest.short): \(error)")
        }
        return found
    }

    /// The image's newest index artifact and the layers it indexes, read from its manifest only (no index blob).
    public static func describe(_ image: ResolvedImage) async throws -> (artifact: Descriptor, layers: [Digest])? {
        guard let artifact = try await image.source.referrers(of: image.manifestDescriptor.digest, artifactType: GzipIndex.artifactType).last else {
            return nil
        }
        let manifest = try await artifactManifest(artifact, from: image.source)
        let layers = manifest.layers.compactMap { $0.annotations?[GzipIndex.layerAnnotation].flatMap { try? Digest($0) } }
        return (artifact, layers)
    }

    private static func artifactManifest(_ artifact: Descriptor, from source: any ImageSource) async throws -> Manifest {
        guard artifact.size <= documentLimit else { throw GzipIndexError.invalidIndex("artifact manifest of \(artifact.size) bytes") }
        guard case .manifest(let manifest) = try ManifestDocument.decode(try await source.document(artifact), contentType: artifact.mediaType) else {
            throw GzipIndexError.invalidIndex("artifact \(artifact.digest) is an index, not a manifest")
        }
        return manifest
    }

    private static func decodePrioritizedFiles(_ bytes: [UInt8]) throws -> [String] {
        struct Files: Decodable { var files: [String] }
        guard bytes.count <= documentLimit, let decoded = try? JSONDecoder().decode(Files.self, from: Data(bytes)) else {
            throw GzipIndexError.invalidIndex("the prioritized files are not {\"files\": [...]}")
        }
        return decoded.files
    }

    // MARK: Building

    /// Indexes every indexable layer of the image (each read once, from the store: fetched first when it is not
    /// there, two layers at a time), stores the index blobs and the artifact in `store` as a referrer of the
    /// image, and returns them.
    public static func build(
        for image: ResolvedImage, store: ContentStore, prioritizedFiles: [String] = [], progress: @escaping ProgressHandler = { _ in }
    ) async throws -> ImageIndexes {
        let layers = indexableLayers(of: image)
        var built = ImageIndexes()
        built.prioritizedFiles = prioritizedFiles
        try await withThrowingTaskGroup(of: (Digest, GzipIndex).self) { group in
            var pending = layers[...]
            func startNext() {
                guard let layer = pending.popFirst() else { return }
                group.addTask {
                    _ = try await layer.fetch(into: store, progress: progress)
                    let index = try await indexStoredBlob(layer.descriptor, store: store)
                    return (layer.descriptor.digest, index)
                }
            }
            startNext()
            startNext()
            while let (digest, index) = try await group.next() {
                built.layers[digest] = index
                startNext()
            }
        }
        // The store's writes end in fsyncs: off the cooperative pool.
        let indexes = built.layers
        let (descriptor, blobSizes) = try await runBlocking { () throws -> (Descriptor, [Digest: Int64]) in
            var blobs: [Descriptor] = []
            var sizes: [Digest: Int64] = [:]
            for layer in layers {
                guard let index = indexes[layer.descriptor.digest] else { continue }
                let blob = GzipIndexArtifact.indexBlob(
                    try store.writeBlob(try index.encoded(), mediaType: GzipIndex.layerMediaType), of: layer.descriptor.digest)
                blobs.append(blob)
                sizes[layer.descriptor.digest] = blob.size
            }
            if !prioritizedFiles.isEmpty {
                let json = Array(try JSONEncoder.canonical.encode(["files": prioritizedFiles]))
                blobs.append(try store.writeBlob(json, mediaType: GzipIndexArtifact.prioritizedFilesMediaType))
            }
            let empty = GzipIndexArtifact.emptyConfig
            _ = try store.writeBlob(GzipIndexArtifact.emptyConfigBytes, mediaType: empty.mediaType, expected: empty.digest)
            let (descriptor, bytes) = try GzipIndexArtifact.manifest(subject: image.manifestDescriptor, blobs: blobs)
            _ = try store.writeBlob(bytes, mediaType: descriptor.mediaType, expected: descriptor.digest)
            try store.addReferrer(descriptor, subject: image.manifestDescriptor.digest)
            return (descriptor, sizes)
        }
        built.blobSizes = blobSizes
        built.artifact = descriptor
        return built
    }

    /// Indexes a layer blob in the store, reading it on a thread of its own.
    public static func indexStoredBlob(_ layer: Descriptor, store: ContentStore) async throws -> GzipIndex {
        let path = store.blobPath(layer.digest)
        return try await runBlocking {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw GzipIndexError.unreadableLayer("cannot open \(path): errno \(errno)") }
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            return try GzipIndexBuilder.build(layer: layer) {
                let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                guard count >= 0 else { throw GzipIndexError.unreadableLayer("reading \(path): errno \(errno)") }
                return count == 0 ? nil : Array(buffer[..<count])
            }
        }
    }

    // MARK: Publishing

    /// Pushes the artifact and its blobs next to the image (the empty config too) and makes it findable: by the
    /// Referrers API where the registry has one, else under the subject's fallback tag.
    public static func push(_ artifact: Descriptor, subject: Digest, store: ContentStore, client: RegistryClient, repository: String) async throws {
        let bytes = try store.readBlob(artifact.digest)
        guard case .manifest(let manifest) = try ManifestDocument.decode(bytes, contentType: artifact.mediaType) else {
            throw GzipIndexError.invalidIndex("artifact \(artifact.digest) is not a manifest")
        }
        for blob in [manifest.config] + manifest.layers where !(try await client.blobExists(repository: repository, digest: blob.digest)) {
            try await client.uploadBlob(repository: repository, descriptor: blob, fromFile: store.blobPath(blob.digest))
        }
        try await client.pushReferrer(repository: repository, artifact: artifact, bytes: bytes, subject: subject)
    }
}
