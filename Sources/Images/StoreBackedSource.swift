import ContentStore
import OCI
import Registry

/// Wraps a source so configs go through the store's ingest: many processes resolving the same image at once
/// fetch its config once (the others wait on the blob's lock and read it from the store), and a config already
/// in the store is not fetched at all.
package struct StoreBackedSource: ImageSource {
    let inner: any ImageSource
    let store: ContentStore

    package init(inner: any ImageSource, store: ContentStore) {
        self.inner = inner
        self.store = store
    }

    package var name: String { inner.name }

    package func rootDocument() async throws -> FetchedManifest { try await inner.rootDocument() }

    package func document(_ descriptor: Descriptor) async throws -> [UInt8] {
        if MediaType.isManifest(descriptor.mediaType) || MediaType.isIndex(descriptor.mediaType) {
            return try await inner.document(descriptor)
        }
        _ = try await store.ingest(descriptor) { sink in try await inner.fetchBlob(descriptor, into: sink) }
        return try store.readBlob(descriptor.digest)
    }

    package func fetchBlob(_ descriptor: Descriptor, into sink: any BlobSink) async throws {
        try await inner.fetchBlob(descriptor, into: sink)
    }

    /// The source's own file, or the store's verified copy when an earlier pull left one.
    package func localBlobPath(_ descriptor: Descriptor) -> String? {
        inner.localBlobPath(descriptor) ?? (store.hasBlob(descriptor) ? store.blobPath(descriptor.digest) : nil)
    }

    /// The store's referrers first (built or fetched here before), then the source's.
    package func referrers(of subject: Digest, artifactType: String) async throws -> [Descriptor] {
        let local = ((try? store.referrers(of: subject)) ?? []).filter { $0.artifactType == artifactType }
        let remote = try await inner.referrers(of: subject, artifactType: artifactType)
        return remote.filter { artifact in !local.contains { $0.digest == artifact.digest } } + local
    }

    package func readRange(_ descriptor: Descriptor, offset: Int64, length: Int) async throws -> [UInt8] {
        try await inner.readRange(descriptor, offset: offset, length: length)
    }

    package func readRanges(_ descriptor: Descriptor, ranges: [Range<Int64>]) async throws -> [[UInt8]] {
        try await inner.readRanges(descriptor, ranges: ranges)
    }
}
