import OCI
import Registry

/// An image in a registry.
public struct RemoteImageSource: ImageSource {
    public let reference: Reference
    public let client: RegistryClient

    public init(reference: Reference, client: RegistryClient) {
        self.reference = reference
        self.client = client
    }

    public var name: String { reference.description }

    public func rootDocument() async throws -> FetchedManifest {
        try await client.fetchManifest(repository: reference.repository, reference: reference.identifier)
    }

    public func document(_ descriptor: Descriptor) async throws -> [UInt8] {
        if MediaType.isIndex(descriptor.mediaType) || MediaType.isManifest(descriptor.mediaType) {
            let fetched = try await client.fetchManifest(
                repository: reference.repository, reference: descriptor.digest.description, expectedSize: descriptor.size)
            return fetched.bytes
        }
        return try await client.fetchSmallBlob(repository: reference.repository, descriptor: descriptor)
    }

    public func fetchBlob(_ descriptor: Descriptor, into sink: any BlobSink) async throws {
        try await blob(descriptor).fetch(into: sink)
    }

    public func localBlobPath(_ descriptor: Descriptor) -> String? { nil }

    public func referrers(of subject: Digest, artifactType: String) async throws -> [Descriptor] {
        try await client.referrers(repository: reference.repository, subject: subject, artifactType: artifactType)
    }

    public func readRange(_ descriptor: Descriptor, offset: Int64, length: Int) async throws -> [UInt8] {
        try await client.fetchRange(repository: reference.repository, digest: descriptor.digest, offset: offset, length: length)
    }

    public func readRanges(_ descriptor: Descriptor, ranges: [Range<Int64>]) async throws -> [[UInt8]] {
        try await blob(descriptor).read(ranges: ranges)
    }

    private func blob(_ descriptor: Descriptor) -> RegistryBlob {
        RegistryBlob(client: client, repository: reference.repository, descriptor: descriptor)
    }
}
