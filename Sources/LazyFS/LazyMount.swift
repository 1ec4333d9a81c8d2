import Blocking
import ContentStore
import EStargz
import FUSE
import Foundation
import GzipIndex
import Logging
import OCI
import Images
import Synchronization

/// Settings of a lazy mount.
public struct LazyMountOptions: Sendable {
    public var prefetch: PrefetchMode = .all
    /// How long a read waits for the registry before it fails with EIO.
    public var fetchTimeout: Duration = .seconds(20)
    /// Size the chunk cache is trimmed to.
    public var cacheLimit: Int64 = 20 << 30
    /// Where to write the paths the workload opened, in first-access order, when the mount ends.
    public var recordPath: String?
    /// Let other users see the mount (root only, or `user_allow_other` in /etc/fuse.conf).
    public var allowOther = geteuid() == 0
    /// Serve only this layer of the image, as an overlayfs lower directory (`ImageTree(overlayLower:)`).
    public var onlyLayer: Digest?
    /// The TOC digest `onlyLayer` must have in the image's manifest.
    public var expectedTOC: Digest?
    /// Seekable indexes of the image's plain gzip layers, by layer digest: those layers are served lazily too.
    public var gzipIndexes: [Digest: GzipIndex] = [:]
    /// Files of indexed layers the prefetch fetches first, in order.
    public var prioritizedFiles: [String] = []
    /// Refuse to mount when a layer would have to be pulled whole (neither eStargz nor indexed).
    public var lazyOnly = false

    public init() {}
}

/// An image mounted read-only at a directory, its files fetched as they are read, with its state published for
/// `slipway status` and `slipway umount`.
public final class LazyMount: Sendable {
    public let mountpoint: String
    public let statePath: String
    public let counters: MountCounters
    let image: LazyImage
    let fuse: FUSEMount
    let prefetcher: Prefetcher
    let recorder: AccessRecorder?
    let options: LazyMountOptions
    /// The store's shared lock, held while mounted: `gc` must not remove the extracted layers being served.
    let storeLease: FileLock
    private let baseState: MountState
    private let stopped = Atomic<Bool>(false)
    private let sequence = Atomic<Int>(0)
    /// Signalled to publish the state now (SIGUSR1 from `slipway status`) instead of at the next second.
    private let publishNow = DispatchSemaphore(value: 0)
    let store: ContentStore
    let logger: Logger
    /// The image whose start-up profile this mount keeps in the store when it ends (what its workload opened).
    let profileToRecord: Digest?
    /// The latest pass writing the layers whose chunks have all arrived into the store (`LayerMaterializer`).
    private let materializing = Mutex<Task<Int, Never>?>(nil)
    /// Set when the mount ends while a pass is writing: the process is about to exit, and the next mount or run
    /// finds the chunks still cached.
    private let materializingAbandoned = Atomic<Bool>(false)

    private init(
        mountpoint: String, statePath: String, counters: MountCounters, image: LazyImage, fuse: FUSEMount, prefetcher: Prefetcher,
        recorder: AccessRecorder?, options: LazyMountOptions, storeLease: FileLock, baseState: MountState, store: ContentStore,
        logger: Logger, profileToRecord: Digest?
    ) {
        self.profileToRecord = profileToRecord
        self.store = store
        self.logger = logger
        self.mountpoint = mountpoint
        self.statePath = statePath
        self.counters = counters
        self.image = image
        self.fuse = fuse
        self.prefetcher = prefetcher
        self.recorder = recorder
        self.options = options
        self.storeLease = storeLease
        self.baseState = baseState
    }

    /// Opens the image's layers, mounts it at `mountpoint` (an existing directory) and starts the prefetch.
    public static func mount(
        _ resolved: any Image, named name: String, store: ContentStore, at mountpoint: String,
        options: LazyMountOptions, logger: Logger, progress: @escaping ProgressHandler = { _ in }
    ) async throws -> LazyMount {
        let statePath = MountState.path(forMountpoint: mountpoint, storeRoot: store.root)
        var state = MountState(
            mountpoint: mountpoint, image: name, manifestDigest: resolved.manifestDescriptor.digest.description, prefetch: options.prefetch)
        if let layer = options.onlyLayer {
            state.layer = layer.description
            state.tocDigest = resolved.layers.first { $0.descriptor.digest == layer }?.descriptor.annotations?[tocDigestAnnotation]
        }
        try state.write(to: statePath)
        let lease = try await store.lockForWriting()
        do {
            let counters = MountCounters()
            let cache = try ChunkCache(root: "\(store.root)/chunks", limit: options.cacheLimit)
            let image = try await LazyImage.open(
                resolved, onlyLayer: options.onlyLayer, expectedTOC: options.expectedTOC, indexes: options.gzipIndexes,
                prioritizedFiles: options.prioritizedFiles, lazyOnly: options.lazyOnly, store: store, cache: cache, counters: counters, fetchTimeout: options.fetchTimeout,
                progress: progress)
            // The start-up profile kept for this image: its files are fetched first. Without one, this mount
            // records the workload's start for the next cold start (a mount of one layer serves no workload).
            let manifest = resolved.manifestDescriptor.digest
            let profile = options.onlyLayer == nil ? StartupProfile.load(for: manifest, storeRoot: store.root) : nil
            let profiled = profile?.files.compactMap(image.chunks(ofFile:)) ?? []
            let recordsProfile = options.onlyLayer == nil && (profile == nil || options.recordPath != nil)
            let recorder = options.recordPath != nil || recordsProfile ? AccessRecorder() : nil
            let filesystem = LazyFilesystem(image: image, recorder: recorder, logger: logger)
            var mountOptions = ["ro", "default_permissions", "fsname=slipway", "subtype=slipway"]
            if options.allowOther { mountOptions.append("allow_other") }
            let fuse = FUSEMount(filesystem: filesystem, mountpoint: mountpoint, options: mountOptions, passthrough: true)
            // Mounting may run fusermount3, and waits for the kernel's handshake.
            try await runBlocking { try fuse.start() }
            state.ready = true
            state.lazyLayers = image.layers.count
            state.wholeLayers = image.wholeLayers
            state.indexedLayers = image.indexedLayers
            state.files = image.tree.fileCount
            state.profileFiles = profiled.count
            let prefetcher = Prefetcher(image: image, mode: options.prefetch, counters: counters, profile: profiled)
            let mount = LazyMount(
                mountpoint: mountpoint, statePath: statePath, counters: counters, image: image, fuse: fuse, prefetcher: prefetcher,
                recorder: recorder, options: options, storeLease: lease, baseState: state, store: store, logger: logger,
                profileToRecord: recordsProfile ? manifest : nil)
            mount.publish()
            prefetcher.start { [weak mount] in mount?.materializeCompleteLayers() }
            mount.startPublishing()
            return mount
        } catch {
            lease.release()
            state.error = "\(error)"
            try? state.write(to: statePath)
            throw error
        }
    }

    /// The state as `slipway status` shows it.
    public var state: MountState {
        var state = baseState
        state.statistics = counters.snapshot
        state.statistics.passthroughOpens = fuse.passthroughOpens
        state.ready = !stopped.load(ordering: .relaxed)
        state.sequence = sequence.load(ordering: .relaxed)
        return state
    }

    private func publish() {
        sequence.add(1, ordering: .relaxed)
        try? state.write(to: statePath)
    }

    /// Publishes the state every second, and at once when asked.
    private func startPublishing() {
        let thread = Thread { [self] in
            while !stopped.load(ordering: .relaxed) {
                _ = publishNow.wait(timeout: .now() + 1)
                if !stopped.load(ordering: .relaxed) { publish() }
            }
        }
        thread.name = "slipway-mount-state"
        thread.start()
    }

    /// Publishes the state now (call from a SIGUSR1 handler's queue).
    public func requestPublish() { publishNow.signal() }

    /// Writes every eStargz layer whose chunks have all arrived into the store, in the background, after any pass
    /// already running; the task yields how many layers this pass wrote.
    @discardableResult
    public func materializeCompleteLayers(background: Bool = true) -> Task<Int, Never> {
        materializing.withLock { latest in
            let previous = latest
            let task = Task { [image, store, logger, counters, self] in
                _ = await previous?.value
                var written = 0
                for index in image.layers.keys.sorted() {
                    guard let layer = image.layers[index], let toc = LayerMaterializer.tocDigest(of: layer.layer),
                        !store.hasMaterializedLayer(toc: toc), LayerMaterializer.isComplete(layer, cache: image.fetcher.cache)
                    else { continue }
                    do {
                        let abandoned = { @Sendable [self] in materializingAbandoned.load(ordering: .relaxed) }
                        if try await LayerMaterializer.materialize(
                            layer, fetcher: image.fetcher, store: store, background: background, abandoned: abandoned)
                        {
                            written += 1
                            counters.update { $0.layersMaterialized += 1 }
                        }
                    } catch is CancellationError {
                        break
                    } catch {
                        logger.warning("layer \(layer.descriptor.digest.short) was not materialized (it stays lazy): \(error)")
                    }
                }
                return written
            }
            latest = task
            return task
        }
    }

    /// Blocks until the background prefetch has brought the whole image (or was stopped), then writes the layers
    /// out: what a run does after its container ended, so the next run of any image with these layers needs no FUSE.
    /// `waiting` is told the compressed bytes still to come, when any are.
    public func completeAndMaterialize(waiting: (Int64) -> Void) async {
        if options.prefetch == .all {
            let statistics = counters.snapshot
            if !statistics.prefetchFinished { waiting(max(0, statistics.prefetchTotal - statistics.prefetchDone)) }
            await runBlocking { [prefetcher] in prefetcher.waitUntilFinished() }
        }
        // The container has ended: nothing to yield the cores to.
        _ = await materializeCompleteLayers(background: false).value
    }

    /// Unmounts (lazily when busy); `wait` then returns.
    public func stop() {
        prefetcher.stop()
        try? fuse.unmount()
    }

    /// Blocks until the mount is gone (unmounted by `stop`, `slipway umount` or `fusermount3 -u`), then writes the
    /// access record and the profile, the layers that reads completed (see below) and the final state. Call on a
    /// thread of its own.
    public func wait() -> MountStatistics {
        fuse.waitUntilUnmounted()
        prefetcher.stop()
        stopped.store(true, ordering: .relaxed)
        // The access record and the profile first: they are small, and what the next cold start needs.
        if let recorder, let path = options.recordPath { try? recorder.write(to: path) }
        if let recorder, let image = profileToRecord, !recorder.paths.isEmpty {
            do {
                try StartupProfile(image: image, files: recorder.paths).save(storeRoot: store.root)
            } catch {
                logger.warning("the start-up profile of \(image) was not kept: \(error)")
            }
        }
        // With the default prefetch, layers were written out as the prefetch completed them: one still being
        // written is abandoned and not waited for (at nice 10 on a loaded node it could hold `slipway umount` up for
        // seconds; the next writer removes its half). Otherwise what reads completed is written out now, at full
        // speed, before the store's lease goes (gc must not collect under it).
        if options.prefetch == .all {
            materializingAbandoned.store(true, ordering: .relaxed)
        } else {
            // Bounded only so that a broken pass cannot keep the process (and the store's lease) forever.
            _ = try? waitForAsync(timeout: .seconds(3600), what: "writing out the layers that reads completed") { [self] in
                await materializeCompleteLayers(background: false).value
            }
        }
        storeLease.release()
        publish()
        return counters.snapshot
    }
}
