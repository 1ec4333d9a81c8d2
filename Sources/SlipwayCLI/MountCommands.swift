import ArgumentParser
import Blocking
import Foundation
import LazyFS
import OCI
import Slipway

#if canImport(Glibc)
import Glibc
#endif

struct Mount: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mount an image read-only at DIR; files are fetched as they are read (eStargz and indexed gzip layers lazily).",
        discussion: """
            eStargz layers are served from their table of contents, plain gzip layers from a gzip index when the \
            image has one (`slipway index`, or built by `slipway serve --index`): a read fetches only the chunks \
            it needs, verified, into a chunk cache in the store shared by every mount, image and version. Other \
            layers are downloaded and extracted before the mount appears. The command returns once the mount is live and \
            keeps serving it in the background; `slipway umount DIR` ends it.
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var decompression: DecompressionOptions
    @Argument(help: "Image reference or oci:PATH[:NAME].") var image: String
    @Argument(help: "Existing directory to mount at.") var directory: String
    @Option(name: .long, help: "What to fetch before it is read: none, landmark (the prioritized files), all (then everything else, in the background).")
    var prefetch: PrefetchMode = .all
    @Option(name: .long, help: "Seconds a read waits for the registry before failing with EIO.") var fetchTimeout: Double = 20
    @Option(name: .long, help: "Chunk cache size limit in GiB.") var cacheSize: Double = 20
    @Option(name: .long, help: "When the mount ends, write the paths the workload opened (first-access order) to FILE.")
    var record: String?
    @Option(name: .long, help: ArgumentHelp(
        "Mount only this layer (a blob digest of the image), as an overlayfs lower directory: whiteouts as 0/0 character devices, opaque directories marked with trusted.overlay.opaque.",
        valueName: "DIGEST"))
    var layer: String?
    @Option(name: .long, help: ArgumentHelp("With --layer: refuse the layer unless the image annotates it with this TOC digest.", valueName: "DIGEST"))
    var tocDigest: String?
    @Flag(name: .long, help: "Do not look for gzip indexes (plain gzip layers are then pulled whole).") var noIndex = false
    @Flag(name: .long, help: "Fail instead of pulling a layer whole when it is neither eStargz nor has a gzip index.") var lazyOnly = false
    @Flag(name: .shortAndLong, help: "Serve in the foreground until unmounted (SIGINT/SIGTERM unmount).") var foreground = false

    func validate() throws {
        guard fetchTimeout > 0 else { throw ValidationError("--fetch-timeout must be positive") }
        guard cacheSize > 0 else { throw ValidationError("--cache-size must be positive") }
        if let layer, (try? Digest(layer)) == nil { throw ValidationError("--layer needs a digest (sha256:HEX), not \(layer)") }
        if let tocDigest {
            guard layer != nil else { throw ValidationError("--toc-digest goes with --layer") }
            guard (try? Digest(tocDigest)) != nil else { throw ValidationError("--toc-digest needs a digest (sha256:HEX), not \(tocDigest)") }
        }
    }

    func run() async throws {
        let location = try parseLocation(image)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ValidationError("\(directory) is not a directory")
        }
        let mountpoint = resolvedPath(directory)
        let store = try global.openStore()
        let statePath = MountState.path(forMountpoint: mountpoint, storeRoot: store.root)
        if let existing = MountState.read(statePath), existing.ownerAlive, existing.error == nil {
            throw ValidationError("\(mountpoint) is already a slipway mount (pid \(existing.pid)); slipway umount it first")
        }
        if !foreground {
            try await runInBackground(statePath: statePath)
            return
        }
        var options = LazyMountOptions()
        options.prefetch = prefetch
        options.fetchTimeout = .milliseconds(Int64(fetchTimeout * 1000))
        options.cacheLimit = Int64(cacheSize * Double(1 << 30))
        options.recordPath = record.map(resolvedPath)
        options.onlyLayer = try layer.map { try Digest($0) }
        options.expectedTOC = try tocDigest.map { try Digest($0) }
        options.lazyOnly = lazyOnly
        let display = global.makeProgress()
        let logger = global.makeLogger()
        let statistics = try await global.withSession(for: [location]) { session in
            let source = try session.source(for: location, backedBy: store)
            let resolved = try await source.resolve(platform: session.options.platform)
            var options = options
            if !noIndex {
                await options.useGzipIndexes(of: resolved) { message in
                    if !global.quiet { FileHandle.standardError.write(Data("slipway: \(message)\n".utf8)) }
                }
            }
            let mount = try await LazyMount.mount(
                resolved, named: Puller.storeName(for: location), store: store, at: mountpoint, options: options,
                logger: logger, progress: display.handler)
            display.finish()
            FileHandle.standardError.write(Data("slipway: \(location) mounted at \(mountpoint)\n".utf8))
            let signals = UnmountOnSignal(mount)
            defer { signals.cancel() }
            return await runBlocking { mount.wait() }
        }
        if global.json { try printJSON(statistics) }
    }

    /// Starts this command again as a session leader serving the mount in the foreground, and returns once it
    /// reports the mount live (or failed).
    private func runInBackground(statePath: String) async throws {
        let command = [executablePath()] + Array(CommandLine.arguments.dropFirst()) + ["--foreground", "--quiet"]
        let state = try await MountControl.startInBackground(command, statePath: statePath)
        if global.json { try printJSON(state) } else { print(state.mountpoint) }
    }
}

/// SIGINT and SIGTERM unmount a foreground mount, so `wait` returns and the statistics are written; SIGUSR1
/// publishes the state at once (for `slipway status`).
final class UnmountOnSignal {
    private let sources: [any DispatchSourceSignal]

    init(_ mount: LazyMount) {
        sources = [SIGINT, SIGTERM, SIGUSR1].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { number == SIGUSR1 ? mount.requestPublish() : mount.stop() }
            source.resume()
            return source
        }
    }

    func cancel() { sources.forEach { $0.cancel() } }
}

struct Umount: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Unmount a slipway mount (also cleans up a mount whose process died).")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The mount's directory.") var directory: String

    func run() async throws {
        let mountpoint = resolvedPath(directory)
        let unmounted = try await MountControl.unmount(mountpoint, storeRoot: try global.openStore().root)
        if let pid = unmounted.stillServing {
            FileHandle.standardError.write(Data(
                "slipway: \(mountpoint) was busy and is detached; its process \(pid) serves the files still open there and ends when they are closed\n".utf8))
        }
        if global.json {
            guard let final = unmounted.finalState else { throw ValidationError("\(mountpoint): no slipway mount state (unmounted anyway)") }
            try printJSON(final)
        }
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a slipway mount's progress: bytes fetched, requests, cache hits, prefetch.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The mount's directory.") var directory: String

    func run() async throws {
        let mountpoint = resolvedPath(directory)
        let store = try global.openStore()
        guard let state = await MountState.fresh(MountState.path(forMountpoint: mountpoint, storeRoot: store.root)), state.ownerAlive else {
            throw LazyFSError.notMounted(mountpoint)
        }
        if global.json {
            try printJSON(state)
            return
        }
        let s = state.statistics
        let prefetch = s.prefetchTotal > 0 ? String(format: "%.0f %%", Double(s.prefetchDone) / Double(s.prefetchTotal) * 100) : "-"
        let indexed = state.indexedLayers ?? 0
        var lazy = "\(state.lazyLayers) lazy"
        if indexed > 0 {
            lazy += " (\(indexed) through a gzip index: \(s.layersVerified) verified whole"
            lazy += s.layersRejected > 0 ? ", \(s.layersRejected) REJECTED, their reads fail)" : ")"
        }
        print("""
            \(state.image) at \(state.mountpoint) (pid \(state.pid))
              layers: \(lazy), \(state.wholeLayers) fetched whole; files: \(state.files)
              fetched: \(formatBytes(s.bytesFetched)) in \(s.requests) requests; chunks fetched \(s.chunksFetched), cache hits \(s.cacheHits)
              reads that waited: \(s.blockingReads), failed: \(s.failedReads); prefetch (\(state.prefetch.rawValue)): \(prefetch)\(s.prefetchFinished ? ", done" : "")
            """)
    }
}

extension PrefetchMode: ExpressibleByArgument {}

/// An absolute path with symlinks resolved where possible (a dead mount cannot be resolved; it is kept as given).
func resolvedPath(_ path: String) -> String {
    let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    guard let resolved = realpath(absolute, nil) else { return (absolute as NSString).standardizingPath }
    defer { free(resolved) }
    return String(cString: resolved)
}

/// This executable, for starting the background mount process.
func executablePath() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

extension Mount: DecompressingCommand {}
