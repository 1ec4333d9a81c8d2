import ContentStore
import Foundation
import Images
import OCI
import Registry
import TestSupport

/// A layout source seen as a remote one would be: no local files (bytes come through reads and fetches only),
/// reads counted, and a blob that can be made to fail.
struct RemoteLikeSource: ImageSource {
    let inner: LayoutImageSource
    var failing: Digest?
    let ranges = Counter()

    init(_ inner: LayoutImageSource, failing: Digest? = nil) {
        self.inner = inner
        self.failing = failing
    }

    var name: String { inner.name }
    func rootDocument() async throws -> FetchedManifest { try await inner.rootDocument() }
    func document(_ descriptor: Descriptor) async throws -> [UInt8] { try await inner.document(descriptor) }

    func fetchBlob(_ descriptor: Descriptor, into sink: any BlobSink) async throws {
        if descriptor.digest == failing { throw SourceFailure(digest: descriptor.digest) }
        try await inner.fetchBlob(descriptor, into: sink)
    }

    func localBlobPath(_ descriptor: Descriptor) -> String? { nil }

    func readRange(_ descriptor: Descriptor, offset: Int64, length: Int) async throws -> [UInt8] {
        ranges.increment()
        return try await inner.readRange(descriptor, offset: offset, length: length)
    }
}

struct SourceFailure: Error { var digest: Digest }

/// Stores `value` canonically encoded as a blob of `mediaType`.
func store<T: Encodable>(_ value: T, mediaType: String, in store: ContentStore) throws -> Descriptor {
    try store.writeBlob(Array(try JSONEncoder.canonical.encode(value)), mediaType: mediaType)
}

func jsonObject(_ bytes: [UInt8]) throws -> [String: Any] {
    try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] ?? [:]
}
