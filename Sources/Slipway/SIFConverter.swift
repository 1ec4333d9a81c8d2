#if canImport(Glibc)
import Glibc
#endif
import Blocking
import ContentStore
import Foundation
import ImageTree
import OCI
import SIF
import Images
import Squashfs

/// `slipway convert REF FILE.sif --to sif`: the image's layers go into the store's per-layer cache (each layer
/// extracted once, shared with `unpack` and `run`), and the squashfs partition is built from the merged tree of
/// those layers straight into the SIF file, beside the objects Apptainer writes (definition, OCI config) and the
/// `/.singularity.d` runscript and environment. The result is cached in the store by manifest digest.
///
/// The native writer keeps, beside each cached SIF, the index of its squashfs blocks by file digest; the next
/// conversion copies the blocks of every file a recent SIF already holds, so a patch release compresses only
/// what changed.
public struct SIFConverter: Sendable {
    public enum SquashfsTool: String, Sendable, Codable, CaseIterable {
        /// Slipway's own writer (libdeflate on every core, blocks reused from earlier SIFs).
        case native
        /// `mksquashfs -tar`, the tool Apptainer uses, for comparison.
        case mksquashfs
    }

    public let store: ContentStore
    public var squashfsTool = SquashfsTool.native
    public var squashfs = SquashfsImage.Options()
    public var nativeSquashfs = SquashfsWriter.Options()
    public var progress: ProgressHandler
    /// How many of the most recent SIFs in the store a conversion may copy blocks from.
    public var reuseCandidates = 8

    public init(store: ContentStore, progress: @escaping ProgressHandler = { _ in }) {
        self.store = store
        self.progress = progress
    }

    public struct Report: Sendable, Codable {
        public var image: String
        public var manifestDigest: String
        public var output: String
        public var bytes: Int64
        /// The SIF came from the store's cache: nothing was converted.
        public var cached: Bool
        public var layersExtracted: Int
        public var seconds: Double
        public var squashfsTool: SquashfsTool
        /// What the native writer compressed and what it copied from earlier SIFs (nil from the cache or mksquashfs).
        public var squashfs: DataStatistics?
        /// Time spent building the squashfs partition (0 from the cache).
        public var squashfsSeconds: Double
    }

    /// Converts `image`, from any source, into a SIF at `output`; layers not in the store's layer cache are fetched
    /// and extracted first.
    public func convert(_ image: any Image, reference: String, to output: String) async throws -> Report {
        let started = ContinuousClock.now
        var report = try await convertIntoCache(image, reference: reference)
        let cached = report.output
        try await runBlocking { try Self.copyOut(cached, to: output) }
        var info = stat()
        stat(output, &info)
        report.output = output
        report.bytes = Int64(info.st_size)
        report.seconds = started.secondsElapsed
        return report
    }

    /// Converts `image` into the store's SIF cache, unless it is there already; the report's `output` is the cached
    /// file (which `run --sif` and the Slurm plugin mount in place).
    public func convertIntoCache(_ image: any Image, reference: String) async throws -> Report {
        let started = ContinuousClock.now
        let cached = cachePath(for: image.manifestDescriptor.digest)
        var extracted = 0
        var fromCache = true
        var statistics: DataStatistics?
        var squashfsSeconds = 0.0
        if !FileManager.default.fileExists(atPath: cached) {
            fromCache = false
            extracted = try await Unpacker(store: store, progress: progress).cacheLayers(image)
            let building = ContinuousClock.now
            statistics = try await build(image, reference: reference, into: cached)
            squashfsSeconds = building.secondsElapsed
        }
        var info = stat()
        stat(cached, &info)
        return Report(
            image: reference, manifestDigest: image.manifestDescriptor.digest.description, output: cached, bytes: Int64(info.st_size), cached: fromCache,
            layersExtracted: extracted, seconds: started.secondsElapsed, squashfsTool: squashfsTool, squashfs: statistics,
            squashfsSeconds: squashfsSeconds)
    }

    /// Where the SIF of a manifest is kept in the store.
    public func cachePath(for manifest: Digest) -> String { "\(store.root)/sif/\(manifest.algorithm.rawValue)/\(manifest.hex).sif" }

    /// The index of a cached SIF's squashfs blocks.
    static func blockIndexPath(of sif: String) -> String { String(sif.dropLast(4)) + ".blocks" }

    private func build(_ image: any Image, reference: String, into cached: String) async throws -> DataStatistics? {
        try FileManager.default.createDirectory(atPath: (cached as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let diffIDs = image.layers.map(\.diffID)
        let layers = try await runBlocking { [store] in try diffIDs.map { try LayerEntryCache(store: store).entries(of: $0) } }
        var builder = SIFBuilder(createdAt: Self.creationTime(image.config))
        builder.addObject(.definitionFile, name: "", bytes: Array("bootstrap: docker\nfrom: \(reference)\n".utf8))
        let containerConfig = image.config.config ?? ImageConfig.ContainerConfig()
        builder.addObject(.genericJSON, name: "oci-config.json", bytes: Array(try JSONEncoder.sortedKeys.encode(containerConfig)))
        let metadata = SingularityMetadata(config: containerConfig)
        let partition = SIFPartitionInfo(filesystem: .squashfs, type: .primarySystem, arch: SIFArch(goArch: image.config.architecture))
        var written: SquashfsWriter.Report?
        // Written beside its final name and renamed once complete: an interrupted conversion leaves no SIF.
        try await writeFileAtomically(to: cached) { descriptor, temporary in
            let size: Int64
            switch squashfsTool {
            case .mksquashfs:
                let tree = ImageTree(layers: layers)
                var options = squashfs
                options.extraFiles = metadata.files
                progress(.message("building the squashfs partition with mksquashfs (\(tree.fileCount) files)"))
                size = try await SquashfsImage.write(tree, to: temporary, offset: builder.partitionOffset, options: options)
            case .native:
                let tree = ImageTree(layers: layers + [metadata.entries(mtime: builder.createdAt)])
                progress(.message("building the squashfs partition (\(tree.fileCount) files)"))
                let report = try await writeNative(tree, to: descriptor, path: temporary, at: builder.partitionOffset)
                size = Int64(report.bytes)
                written = report
            }
            try builder.write(to: temporary, partition: partition, partitionSize: size)
        }
        // After the SIF: an index names blocks of a file that exists.
        if let index = written?.index { try await runBlocking { try AtomicFile.write(index.encoded(), to: Self.blockIndexPath(of: cached)) } }
        return written?.data
    }

    private func writeNative(_ tree: ImageTree, to descriptor: Int32, path: String, at offset: Int64) async throws -> SquashfsWriter.Report {
        var options = nativeSquashfs
        // Overlay attributes steer the kernel's overlayfs, and Apptainer mounts the partition under one.
        options.keepXattr = { !$0.hasPrefix("trusted.overlay.") && !$0.hasPrefix("user.overlay.") }
        options.immutableSources = "\(store.root)/layers/"
        return try await runBlocking { [options, self] in
            let reuse = ReusableBlocks(candidates: recentBlockIndexes(), settings: options.settings)
            return try SquashfsWriter.write(tree, to: descriptor, path: path, at: offset, options: options, reuse: reuse)
        }
    }

    /// The block indexes of the most recently written SIFs in the store, with the SIF each describes.
    private func recentBlockIndexes() -> [(file: String, index: BlockIndex)] {
        var found: [(file: String, modified: Int, index: String)] = []
        for algorithm in ["sha256", "sha512"] {
            let directory = "\(store.root)/sif/\(algorithm)"
            for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where name.hasSuffix(".blocks") && !name.hasPrefix(".") {
                let index = "\(directory)/\(name)"
                var info = stat()
                guard stat(index, &info) == 0 else { continue }
                found.append((String(index.dropLast(7)) + ".sif", info.st_mtim.tv_sec, index))
            }
        }
        return found.sorted { $0.modified > $1.modified }.prefix(reuseCandidates).compactMap { candidate in
            guard let bytes = FileManager.default.contents(atPath: candidate.index), let index = BlockIndex.decode(Array(bytes)) else { return nil }
            return (candidate.file, index)
        }
    }

    /// `SOURCE_DATE_EPOCH` when set (reproducible builds, as Apptainer does), else now.
    private static func creationTime(_ config: ImageConfig) -> Int64 {
        if let epoch = ProcessInfo.processInfo.environment["SOURCE_DATE_EPOCH"].flatMap(Int64.init) { return epoch }
        return Int64(Date().timeIntervalSince1970)
    }

    /// A copy for the user, so the cached SIF stays intact whatever they do with theirs.
    static func copyOut(_ source: String, to destination: String) throws {
        let temporary = "\(destination).tmp-\(getpid())"
        try? FileManager.default.removeItem(atPath: temporary)
        let partial = PartialOutput.register(temporary)
        defer { partial.end() }
        do {
            try copyFile(source, to: temporary)
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw SquashfsImage.Failure(description: "copying the SIF to \(destination): \(error)")
        }
        chmod(temporary, 0o755)
        guard rename(temporary, destination) == 0 else {
            unlink(temporary)
            throw SquashfsImage.Failure(description: "\(destination): \(String(cString: strerror(errno)))")
        }
    }
}

extension JSONEncoder {
    static var sortedKeys: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}
