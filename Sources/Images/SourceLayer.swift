import OCI

/// A layer of an image resolved from an `ImageSource`: its bytes come from wherever the source keeps them.
public struct SourceLayer: Layer {
    public let descriptor: Descriptor
    public let diffID: Digest
    public let source: any ImageSource

    public init(descriptor: Descriptor, diffID: Digest, source: any ImageSource) {
        self.descriptor = descriptor
        self.diffID = diffID
        self.source = source
    }

    public var localFile: String? { source.localBlobPath(descriptor) }

    public func fetch(into sink: any BlobSink) async throws { try await source.fetchBlob(descriptor, into: sink) }

    public func read(ranges: [Range<Int64>]) async throws -> [[UInt8]] {
        try await source.readRanges(descriptor, ranges: ranges)
    }
}
