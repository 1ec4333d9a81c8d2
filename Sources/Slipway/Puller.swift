import Archive
import ContentStore
import Foundation
import Images
import OCI
import Synchronization

/// `slipway pull` and `slipway unpack`: fetch an image into the store (verified, deduplicated, safe alongside other
/// processes) and optionally extract it while the download is still running.
public struct Puller: Sendable {
    public let session: Session
    public let store: ContentStore
    public var progress: ProgressHandler

    public init(session: Session, store: ContentStore, progress: @escaping ProgressHandler = { _ in }) {
        self.session = session
        self.store = store
        self.progress = progress
    }

    /// The name an image gets in the store: the full reference, as skopeo's `oci:STORE:NAME` expects.
    public static func storeName(for location: ImageLocation) -> String {
        switch location {
        case .registry(let reference): return reference.description
        case .layout(let path, let name): return name.map { "oci:\(path):\($0)" } ?? "oci:\(path)"
        }
    }

    public func pull(_ location: ImageLocation) async throws -> (ResolvedImage, TransferReport) {
        // Held from resolving on: the config enters the store before the copier takes its own lease.
        let lock = try await store.lockForWriting()
        defer { lock.release() }
        let (source, image, destination) = try await prepare(location)
        let report = try await Copier(concurrency: session.options.concurrency, progress: progress).copy(image, from: source, to: destination)
        return (image, report)
    }

    /// Resolves the image (its config through the store) and names where it goes. Call with the store lock held.
    private func prepare(_ location: ImageLocation) async throws -> (any ImageSource, ResolvedImage, LayoutDestination) {
        let source = try session.source(for: location, backedBy: store)
        let image = try await source.resolve(platform: session.options.platform)
        return (source, image, LayoutDestination(store: store, imageName: Self.storeName(for: location)))
    }

    /// Pulls and unpacks with the two overlapped: layer `i` is extracted as soon as its blob is verified in the
    /// store, while later layers are still downloading.
    public func pullAndUnpack(_ location: ImageLocation, to directory: String, options: ApplyOptions = ApplyOptions()) async throws
        -> (TransferReport, UnpackReport)
    {
        let (_, transfer, unpacked) = try await pullOverlapped(location) { image, unpacker, arrived in
            try await unpacker.unpack(image, to: directory, options: options, ready: arrived)
        }
        return (transfer, unpacked)
    }

    /// Pulls and fills the store's per-layer cache (what `run` and `convert --to sif` build on), extracting each
    /// layer as soon as its blob is verified. Returns the image and how many layers were extracted.
    public func pullAndCacheLayers(_ location: ImageLocation) async throws -> (ResolvedImage, TransferReport, extracted: Int) {
        try await pullOverlapped(location) { image, unpacker, arrived in
            var extracted = 0
            for (position, layer) in image.layers.enumerated() {
                try await arrived(position)
                if try await unpacker.cacheLayer(layer, position: position, of: image.layers.count) {
                    extracted += 1
                }
            }
            return extracted
        }
    }

    /// Runs a transfer and `consume` together; `consume` waits for layer `i`'s blob with `arrived(i)`. If it fails,
    /// leaving this scope cancels the transfer (an un-awaited `async let`); verified blobs and resumable partial
    /// files stay for the next attempt.
    private func pullOverlapped<T: Sendable>(
        _ location: ImageLocation,
        consume: (ResolvedImage, Unpacker, @escaping @Sendable (Int) async throws -> Void) async throws -> T
    ) async throws -> (ResolvedImage, TransferReport, T) {
        let lock = try await store.lockForWriting()
        defer { lock.release() }
        let (source, image, destination) = try await prepare(location)
        let arrivals = Arrivals()
        let copier = Copier(concurrency: session.options.concurrency, progress: progress)
        let layerDigests = image.manifest.layers.map(\.digest)
        async let transfer: TransferReport = {
            do {
                return try await copier.copy(image, from: source, to: destination) { digest in arrivals.arrived(digest) }
            } catch {
                arrivals.fail(error)
                throw error
            }
        }()
        let consumed = try await consume(image, Unpacker(store: store, progress: progress)) { position in
            try await arrivals.wait(for: layerDigests[position])
        }
        return (image, try await transfer, consumed)
    }
}

/// Which blobs have landed, for consumers that wait on them in another order than they arrive.
final class Arrivals: Sendable {
    private struct State {
        var landed = Set<Digest>()
        var waiters: [Digest: [CheckedContinuation<Void, any Error>]] = [:]
        var failure: (any Error)?
    }
    private let state = Mutex(State())

    func arrived(_ digest: Digest) {
        let waiting = state.withLock { state in
            state.landed.insert(digest)
            return state.waiters.removeValue(forKey: digest) ?? []
        }
        waiting.forEach { $0.resume() }
    }

    func fail(_ error: any Error) {
        let waiting = state.withLock { state in
            state.failure = error
            defer { state.waiters = [:] }
            return state.waiters.values.flatMap { $0 }
        }
        waiting.forEach { $0.resume(throwing: error) }
    }

    func wait(for digest: Digest) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let immediate: Result<Void, any Error>? = state.withLock { state in
                if state.landed.contains(digest) { return .success(()) }
                if let failure = state.failure { return .failure(failure) }
                state.waiters[digest, default: []].append(continuation)
                return nil
            }
            if let immediate { continuation.resume(with: immediate) }
        }
    }
}
