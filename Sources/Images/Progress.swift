import OCI

/// What long operations report, for progress bars on a terminal and log lines elsewhere.
public enum ProgressEvent: Sendable {
    case blobStarted(Descriptor, label: String)
    case blobProgress(Digest, bytes: Int64)
    case blobWaiting(Digest)
    case blobFinished(Digest, transferred: Int64, skipped: Bool)
    case layerStarted(index: Int, of: Int, Descriptor, LayerWork)
    case layerFinished(index: Int, Descriptor, LayerWork, seconds: Double)
    case message(String)
}

/// What is being done to a layer, for progress lines.
public enum LayerWork: Sendable {
    case extract
    case convert

    public var doing: String { self == .extract ? "extracting" : "converting" }
    public var done: String { self == .extract ? "extracted" : "converted" }
}

public typealias ProgressHandler = @Sendable (ProgressEvent) -> Void

/// A sink that reports bytes as they pass, at most every 256 KiB, to keep handlers cheap.
package final class ReportingSink: BlobSink, @unchecked Sendable {
    // Wraps one download's sink; the registry client drives it from one task at a time.
    private let inner: any BlobSink
    private let digest: Digest
    private let progress: ProgressHandler
    private var unreported: Int64 = 0

    package init(_ inner: any BlobSink, digest: Digest, progress: @escaping ProgressHandler) {
        self.inner = inner
        self.digest = digest
        self.progress = progress
    }

    package var count: Int64 { inner.count }

    package func append(_ bytes: UnsafeRawBufferPointer) throws {
        try inner.append(bytes)
        unreported += Int64(bytes.count)
        if unreported >= 256 << 10 {
            progress(.blobProgress(digest, bytes: inner.count))
            unreported = 0
        }
    }

    package func reset() throws {
        try inner.reset()
        progress(.blobProgress(digest, bytes: 0))
    }

    package func digest(_ algorithm: Digest.Algorithm) -> Digest { inner.digest(algorithm) }

    package func waitForRoom() async throws { try await inner.waitForRoom() }
}
