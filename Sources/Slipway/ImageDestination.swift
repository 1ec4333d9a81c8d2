import Blocking
import ContentStore
import Foundation
import Images
import OCI
import Registry

/// Where a copy writes: a registry or an OCI layout (the store included).
public protocol ImageDestination: Sendable {
    var name: String { get }
    /// Transfers one blob unless present; returns the bytes moved (0 when skipped).
    func putBlob(_ descriptor: Descriptor, from source: any ImageSource, progress: @escaping ProgressHandler) async throws -> Int64
    /// Stores a manifest, index or config (small, already verified bytes).
    func putDocument(_ bytes: [UInt8], descriptor: Descriptor) async throws
    /// Names the image's top-level manifest (tag in a registry, ref name in a layout).
    func tag(_ descriptor: Descriptor, bytes: [UInt8]) async throws
    /// Held for the whole copy: a layout's shared store lock, so `gc` cannot remove blobs before they are named.
    func acquireWriteLease() async throws -> FileLock?
}

/// An OCI layout destination.
public struct LayoutDestination: ImageDestination {
    public let store: ContentStore
    public let imageName: String

    public init(store: ContentStore, imageName: String) {
        self.store = store
        self.imageName = imageName
    }

    public var name: String { "oci:\(store.root):\(imageName)" }

    public func putBlob(_ descriptor: Descriptor, from source: any ImageSource, progress: @escaping ProgressHandler) async throws -> Int64 {
        try await source.fetchBlob(descriptor, into: store, progress: progress)
    }

    // The store's writes end in fsyncs of the file and its directory.
    public func putDocument(_ bytes: [UInt8], descriptor: Descriptor) async throws {
        try await runBlocking { [store] in _ = try store.writeBlob(bytes, mediaType: descriptor.mediaType, expected: descriptor.digest) }
    }

    public func tag(_ descriptor: Descriptor, bytes: [UInt8]) async throws {
        try await runBlocking { [store, imageName] in try store.setImage(named: imageName, to: descriptor) }
    }

    public func acquireWriteLease() async throws -> FileLock? { try await store.lockForWriting() }
}

/// A registry destination. Blobs already there are skipped (HEAD); blobs from another repository of the same
/// registry are mounted instead of uploaded.
public struct RemoteDestination: ImageDestination {
    public let reference: Reference
    public let client: RegistryClient
    /// Upload in chunks of this size (PATCH) instead of one PUT.
    public var chunkSize: Int64?

    public init(reference: Reference, client: RegistryClient, chunkSize: Int64? = nil) {
        self.reference = reference
        self.client = client
        self.chunkSize = chunkSize
    }

    public var name: String { reference.description }

    public func putBlob(_ descriptor: Descriptor, from source: any ImageSource, progress: @escaping ProgressHandler) async throws -> Int64 {
        let repository = reference.repository
        if try await client.blobExists(repository: repository, digest: descriptor.digest) { return 0 }
        if let remote = source as? RemoteImageSource, remote.reference.registry == reference.registry,
            remote.reference.repository != repository,
            try await client.mountBlob(repository: repository, digest: descriptor.digest, from: remote.reference.repository)
        {
            return 0
        }
        if let remote = source as? RemoteImageSource, chunkSize == nil {
            // Registry to registry: stream from one to the other, verified on the way.
            let size = descriptor.size
            try await client.uploadBlob(repository: repository, descriptor: descriptor) {
                .stream(VerifiedBlobStream(source: remote, descriptor: descriptor, progress: progress), length: .known(size))
            }
            return descriptor.size
        }
        if let path = source.localBlobPath(descriptor) {
            try await client.uploadBlob(repository: repository, descriptor: descriptor, fromFile: path, chunkSize: chunkSize)
            progress(.blobProgress(descriptor.digest, bytes: descriptor.size))
            return descriptor.size
        }
        // Chunked uploads (or sources without a stream) stage through a private, verified scratch layout.
        let scratchPath = FileManager.default.temporaryDirectory.appendingPathComponent("slipway-copy-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: scratchPath, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: scratchPath) }
        let scratch = try ContentStore(root: scratchPath)
        _ = try await scratch.ingest(descriptor) { sink in
            try await source.fetchBlob(descriptor, into: ReportingSink(sink, digest: descriptor.digest, progress: progress))
        }
        try await client.uploadBlob(repository: repository, descriptor: descriptor, fromFile: scratch.blobPath(descriptor.digest), chunkSize: chunkSize)
        return descriptor.size
    }

    public func putDocument(_ bytes: [UInt8], descriptor: Descriptor) async throws {
        if MediaType.isManifest(descriptor.mediaType) || MediaType.isIndex(descriptor.mediaType) {
            try await client.pushManifest(repository: reference.repository, reference: descriptor.digest.description, bytes: bytes, mediaType: descriptor.mediaType)
        } else if !(try await client.blobExists(repository: reference.repository, digest: descriptor.digest)) {
            try await client.uploadBlob(repository: reference.repository, descriptor: descriptor, bytes: bytes)
        }
    }

    public func acquireWriteLease() async throws -> FileLock? { nil }

    public func tag(_ descriptor: Descriptor, bytes: [UInt8]) async throws {
        try await client.pushManifest(
            repository: reference.repository, reference: reference.tag ?? descriptor.digest.description, bytes: bytes, mediaType: descriptor.mediaType)
    }
}
