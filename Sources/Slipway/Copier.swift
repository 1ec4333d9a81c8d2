import Foundation
import Images
import OCI

/// What a copy or pull did, for `--json` and the closing log line.
public struct TransferReport: Sendable, Codable {
    public var source: String
    public var destination: String
    public var manifestDigest: String
    public var layers: Int
    public var bytesTransferred: Int64
    public var bytesTotal: Int64
    public var seconds: Double
}

/// Copies one resolved image from any source to any destination: config and layers in parallel (bounded), each
/// verified on the way, then the manifest, then the name — so a reader never sees a name before its content.
public struct Copier: Sendable {
    public var concurrency: Int
    public var progress: ProgressHandler

    public init(concurrency: Int = 4, progress: @escaping ProgressHandler = { _ in }) {
        self.concurrency = max(1, concurrency)
        self.progress = progress
    }

    public func copy(
        _ image: ResolvedImage, from source: any ImageSource, to destination: any ImageDestination,
        onBlobReady: @escaping @Sendable (Digest) -> Void = { _ in }
    ) async throws -> TransferReport {
        let started = ContinuousClock.now
        let lease = try await destination.acquireWriteLease()
        defer { lease?.release() }
        try await destination.putDocument(image.configBytes, descriptor: image.manifest.config)
        let progress = self.progress
        let transferred = try await withThrowingTaskGroup(of: Int64.self) { group in
            var total: Int64 = 0
            var pending = image.manifest.layers.makeIterator()
            var running = 0
            func startNext() -> Bool {
                guard let layer = pending.next() else { return false }
                group.addTask {
                    progress(.blobStarted(layer, label: "layer"))
                    let moved = try await destination.putBlob(layer, from: source, progress: progress)
                    progress(.blobFinished(layer.digest, transferred: moved, skipped: moved == 0))
                    onBlobReady(layer.digest)
                    return moved
                }
                return true
            }
            while running < concurrency, startNext() { running += 1 }
            while let moved = try await group.next() {
                total += moved
                if !startNext() { running -= 1 }
            }
            return total
        }
        try await destination.putDocument(image.manifestBytes, descriptor: image.manifestDescriptor)
        try await destination.tag(image.manifestDescriptor, bytes: image.manifestBytes)
        return TransferReport(
            source: source.name, destination: destination.name, manifestDigest: image.manifestDescriptor.digest.description,
            layers: image.manifest.layers.count, bytesTransferred: transferred + Int64(image.configBytes.count),
            bytesTotal: image.totalLayerBytes + Int64(image.configBytes.count), seconds: started.secondsElapsed)
    }
}
