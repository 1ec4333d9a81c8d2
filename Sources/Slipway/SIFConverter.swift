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

/// `slipway convert REF FILE.sif --to sif`: the image's layers go into the store's per-layer cache (each layer
/// extracted once, shared with `unpack` and `run`), and the squashfs partition is built from the merged tree of
/// those layers straight into the SIF file, beside the objects Apptainer writes (definition, OCI config) and the
/// `/.singularity.d` runscript and environment. The result is cached in the store by manifest digest.
public struct SIFConverter: Sendable {
    public let store: ContentStore
    public var squashfs = SquashfsImage.Options()
    public var progress: ProgressHandler

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
    }

    /// Converts `image`, from any source, into a SIF at `output`; layers not in the store's layer cache are fetched
    /// and extracted first.
    public func convert(_ image: any Image, reference: String, to output: String) async throws -> Report {
        let started = ContinuousClock.now
        let cached = cachePath(for: image.manifestDescriptor.digest)
        var extracted = 0
        var fromCache = true
        if !FileManager.default.fileExists(atPath: cached) {
            fromCache = false
            extracted = try await Unpacker(store: store, progress: progress).cacheLayers(image)
            try await build(image, reference: reference, into: cached)
        }
        try await runBlocking { [self] in try copyOut(cached, to: output) }
        var info = stat()
        stat(output, &info)
        let elapsed = ContinuousClock.now - started
        return Report(
            image: reference, manifestDigest: image.manifestDescriptor.digest.description, output: output, bytes: Int64(info.st_size), cached: fromCache,
            layersExtracted: extracted, seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }

    /// Where the SIF of a manifest is kept in the store.
    public func cachePath(for manifest: Digest) -> String { "\(store.root)/sif/\(manifest.algorithm.rawValue)/\(manifest.hex).sif" }

    private func build(_ image: any Image, reference: String, into cached: String) async throws {
        let directory = (cached as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // Written beside its final name and renamed once complete: an interrupted conversion leaves no SIF.
        let temporary = "\(directory)/.tmp-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).sif"
        let partial = PartialOutput.register(temporary)
        defer {
            unlink(temporary)
            partial.end()
        }
        let layerDirectories = image.layers.map { store.layerDirectory($0.diffID) }
        let tree = try await runBlocking { ImageTree(layers: try layerDirectories.map { try LayerEntries.fromDirectory($0) }) }
        var builder = SIFBuilder(createdAt: Self.creationTime(image.config))
        builder.addObject(.definitionFile, name: "", bytes: Array("bootstrap: docker\nfrom: \(reference)\n".utf8))
        let containerConfig = image.config.config ?? ImageConfig.ContainerConfig()
        builder.addObject(.genericJSON, name: "oci-config.json", bytes: Array(try JSONEncoder.sortedKeys.encode(containerConfig)))
        var options = squashfs
        options.extraFiles = SingularityMetadata(config: containerConfig).files
        progress(.message("building the squashfs partition (\(tree.fileCount) files)"))
        let size = try await SquashfsImage.write(tree, to: temporary, offset: builder.partitionOffset, options: options)
        try builder.write(
            to: temporary, partition: SIFPartitionInfo(filesystem: .squashfs, type: .primarySystem, arch: SIFArch(goArch: image.config.architecture)),
            partitionSize: size)
        try await runBlocking {
            let fd = open(temporary, O_RDONLY | O_CLOEXEC)
            if fd >= 0 {
                fsync(fd)
                close(fd)
            }
            guard rename(temporary, cached) == 0 else {
                throw SquashfsImage.Failure(description: "renaming \(temporary): \(String(cString: strerror(errno)))")
            }
        }
    }

    /// `SOURCE_DATE_EPOCH` when set (reproducible builds, as Apptainer does), else now.
    private static func creationTime(_ config: ImageConfig) -> Int64 {
        if let epoch = ProcessInfo.processInfo.environment["SOURCE_DATE_EPOCH"].flatMap(Int64.init) { return epoch }
        return Int64(Date().timeIntervalSince1970)
    }

    /// A copy for the user, so the cached SIF stays intact whatever they do with theirs.
    private func copyOut(_ source: String, to destination: String) throws {
        let temporary = "\(destination).tmp-\(getpid())"
        try? FileManager.default.removeItem(atPath: temporary)
        let partial = PartialOutput.register(temporary)
        defer { partial.end() }
        do {
            try FileManager.default.copyItem(atPath: source, toPath: temporary)
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw SquashfsImage.Failure(description: "copying the SIF to \(destination): \(error.localizedDescription)")
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
