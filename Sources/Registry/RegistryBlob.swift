import OCI

/// A blob in a repository of a registry, read through `client`: how the pull-through cache's upstream and remote
/// images get their bytes.
public struct RegistryBlob: Blob {
    public let client: RegistryClient
    public let repository: String
    public let descriptor: Descriptor

    public init(client: RegistryClient, repository: String, descriptor: Descriptor) {
        self.client = client
        self.repository = repository
        self.descriptor = descriptor
    }

    public var localFile: String? { nil }

    /// Resumes from `sink.count` with Range and returns only once the digest matched.
    public func fetch(into sink: any BlobSink) async throws {
        try await client.fetchBlob(repository: repository, descriptor: descriptor, into: sink)
    }

    public func read(ranges: [Range<Int64>]) async throws -> [[UInt8]] {
        try await client.fetchRanges(repository: repository, digest: descriptor.digest, ranges: ranges)
    }
}
