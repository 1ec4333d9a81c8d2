import ContentStore
import OCI
import Registry
import Foundation

/// An image in an OCI image layout — the Slipway store or any directory skopeo, umoci or crane wrote.
public struct LayoutImageSource: ImageSource {
    public let store: ContentStore
    /// The `org.opencontainers.image.ref.name` to read; nil takes the only image of the layout.
    public let imageName: String?

    public init(store: ContentStore, imageName: String?) {
        self.store = store
        self.imageName = imageName
    }

    public var name: String { "oci:\(store.root)" + (imageName.map { ":\($0)" } ?? "") }

    public func referrers(of subject: Digest, artifactType: String) async throws -> [Descriptor] {
        try store.referrers(of: subject).filter { $0.artifactType == artifactType }
    }

    public func rootDocument() async throws -> FetchedManifest {
        let descriptor: Descriptor
        if let imageName {
            guard let found = try store.image(named: imageName) else {
                let known = (try? store.images().map(\.name)) ?? []
                throw StoreError.notFound("image '\(imageName)' (the layout has: \(known.isEmpty ? "none" : known.joined(separator: ", ")))")
            }
            descriptor = found
        } else {
            let all = try store.allManifestDescriptors().filter { $0.annotations?[ContentStore.subjectAnnotation] == nil }
            guard all.count == 1, let only = all.first else {
                throw StoreError.notFound("a single image in \(store.root) (it has \(all.count); name one as oci:PATH:NAME)")
            }
            descriptor = only
        }
        let bytes = try store.readBlob(descriptor.digest)
        let document = try ManifestDocument.decode(bytes, contentType: descriptor.mediaType)
        return FetchedManifest(
            descriptor: Descriptor(mediaType: descriptor.mediaType, digest: descriptor.digest, size: descriptor.size), bytes: bytes,
            document: document)
    }

    public func document(_ descriptor: Descriptor) async throws -> [UInt8] {
        try store.readBlob(descriptor.digest)
    }

    public func fetchBlob(_ descriptor: Descriptor, into sink: any BlobSink) async throws {
        guard store.hasBlob(descriptor) else { throw StoreError.notFound("blob \(descriptor.digest)") }
        try await copyFile(at: store.blobPath(descriptor.digest), from: sink.count, into: sink)
    }

    public func localBlobPath(_ descriptor: Descriptor) -> String? {
        store.hasBlob(descriptor) ? store.blobPath(descriptor.digest) : nil
    }

    public func readRange(_ descriptor: Descriptor, offset: Int64, length: Int) async throws -> [UInt8] {
        try readFileRange(at: store.blobPath(descriptor.digest), offset: offset, length: length)
    }
}
