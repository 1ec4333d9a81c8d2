import ArgumentParser
import Images
import Runtime
import ContentStore
import Foundation
import OCI
import Registry
import Slipway
import Archive
import EStargz

struct Pull: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Pull an image into the store, verified; prints the manifest digest.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var decompression: DecompressionOptions
    @Argument(help: "Image reference (ubuntu, localhost:5000/app:v1, oci:PATH:NAME).") var image: String
    @Flag(name: .long, help: "Also extract every layer into the per-layer cache (for overlay runs).") var unpackLayers = false

    func run() async throws {
        let location = try parseLocation(image)
        let store = try global.openStore()
        let display = global.makeProgress()
        let (image, report) = try await global.withSession(for: [location]) { session in
            try await Puller(session: session, store: store, progress: display.handler).pull(location)
        }
        var cached = 0
        if unpackLayers { cached = try await Unpacker(store: store, progress: display.handler).cacheLayers(image) }
        display.finish()
        if global.json {
            struct Output: Encodable { var pull: TransferReport; var layersExtracted: Int }
            try printJSON(Output(pull: report, layersExtracted: cached))
        } else {
            print(report.manifestDigest)
            if !global.quiet {
                FileHandle.standardError.write(Data(String(
                    format: "pulled %@: %d layers, %@ transferred of %@, %.2f s\n", report.source, report.layers,
                    formatBytes(report.bytesTransferred), formatBytes(report.bytesTotal), report.seconds).utf8))
            }
        }
    }
}

struct Copy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Copy an image between registries and OCI layouts, like skopeo copy.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Source: a registry reference or oci:PATH[:NAME].") var source: String
    @Argument(help: "Destination: a registry reference or oci:PATH[:NAME].") var destination: String
    @Option(name: .long, help: "Upload blobs in chunks of this many bytes (PATCH) instead of one request.") var chunkSize: Int64?
    @Option(name: .long, help: "Credentials USER:PASSWORD for the destination registry (--creds is for the source).") var destCreds: String?

    func validate() throws {
        if let destCreds, !destCreds.contains(":") { throw ValidationError("--dest-creds takes USER:PASSWORD") }
    }

    func run() async throws {
        let (from, to) = try parseTransfer(from: source, to: destination)
        let display = global.makeProgress()
        let report = try await global.withSession(for: [from, to], destinationCreds: destCreds) { session in
            let sourceImage = try session.source(for: from)
            let target = try session.destination(for: to, chunkSize: chunkSize)
            let image = try await sourceImage.resolve(platform: session.options.platform)
            return try await Copier(concurrency: session.options.concurrency, progress: display.handler).copy(image, from: sourceImage, to: target)
        }
        display.finish()
        if global.json { try printJSON(report) } else { print(report.manifestDigest) }
    }
}

struct Unpack: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Materialize an image's root filesystem in DIR (pulling as needed, extraction overlapped with download).")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var decompression: DecompressionOptions
    @Argument(help: "Image reference or oci:PATH[:NAME].") var image: String
    @Argument(help: "Directory to create (must not exist or be empty).") var directory: String

    func run() async throws {
        let location = try parseLocation(image)
        let store = try global.openStore()
        let display = global.makeProgress()
        let (transfer, unpacked) = try await global.withSession(for: [location]) { session in
            try await Puller(session: session, store: store, progress: display.handler).pullAndUnpack(location, to: directory)
        }
        display.finish()
        if global.json {
            struct Output: Encodable { var pull: TransferReport; var unpack: UnpackReport }
            try printJSON(Output(pull: transfer, unpack: unpacked))
        } else if !global.quiet {
            FileHandle.standardError.write(Data(String(
                format: "unpacked %@ into %@: %d layers, %@, %.2f s\n", transfer.source, unpacked.directory, unpacked.layers,
                formatBytes(unpacked.unpackedBytes), unpacked.seconds).utf8))
        }
    }
}

struct Images: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the images in the store.")
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let rows = try global.openStore().listImages()
        if global.json { return try printJSON(rows) }
        let width = max(5, rows.map(\.name.count).max() ?? 0)
        print("NAME".padding(toLength: width, withPad: " ", startingAt: 0) + "  DIGEST        LAYERS  SIZE")
        for row in rows {
            let digest = String(row.digest.dropFirst("sha256:".count).prefix(12))
            print(row.name.padding(toLength: width, withPad: " ", startingAt: 0) + "  \(digest)  \(String(row.layers).padding(toLength: 6, withPad: " ", startingAt: 0))  \(formatBytes(row.size))")
        }
    }
}

struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show an image's manifest, config and layers (remote or local).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Image reference or oci:PATH[:NAME].") var image: String
    @Flag(name: .long, help: "Print the manifest bytes as served.") var raw = false

    func run() async throws {
        let location = try parseLocation(image)
        let (resolved, name, estargz, gzipIndex) = try await global.withSession(for: [location]) { session in
            let source = try session.source(for: location)
            let image = try await source.resolve(platform: session.options.platform)
            var estargz: [Digest: EStargzLayerInfo] = [:]
            for layer in image.manifest.layers {
                if let info = try await EStargzLayerInfo.read(layer, from: source) { estargz[layer.digest] = info }
            }
            return (image, source.name, estargz, try? await GzipIndexes.describe(image))
        }
        if raw {
            try FileHandle.standardOutput.write(contentsOf: Data(resolved.manifestBytes))
            return
        }
        var summary = try ImageSummary(resolved, name: name, estargz: estargz)
        summary.gzipIndex = gzipIndex.map { ImageSummary.GzipIndexInfo(artifact: $0.artifact.digest.description, layers: $0.layers.map(\.description)) }
        if global.json { return try printJSON(summary) }
        print("Name:       \(summary.name)")
        print("Digest:     \(summary.digest)")
        if let index = summary.indexDigest { print("Index:      \(index)") }
        print("Media type: \(summary.mediaType)")
        print("Platform:   \(summary.platform)")
        if let created = summary.created { print("Created:    \(created)") }
        if let entrypoint = summary.entrypoint { print("Entrypoint: \(entrypoint.joined(separator: " "))") }
        if let cmd = summary.cmd { print("Cmd:        \(cmd.joined(separator: " "))") }
        for variable in summary.env ?? [] { print("Env:        \(variable)") }
        print("Layers:     \(summary.layers.count), \(formatBytes(summary.totalSize)) compressed")
        for layer in summary.layers {
            print("  \(layer.digest)  \(formatBytes(layer.size).padding(toLength: 9, withPad: " ", startingAt: 0))  \(layer.mediaType)")
            if let info = layer.estargz {
                print("    eStargz: TOC \(info.tocDigest), \(info.files) files, \(info.chunks) chunks, prefetch \(formatBytes(info.prefetchBytes))")
            }
            if let index = summary.gzipIndex, index.layers.contains(layer.digest) { print("    gzip index: in \(index.artifact)") }
        }
        if summary.gzipIndex == nil { print("Gzip index: none (slipway index REF --push, or pull through slipway serve --index)") }
    }
}

struct ImageSummary: Encodable {
    struct Layer: Encodable {
        var digest: String
        var size: Int64
        var mediaType: String
        var diffID: String
        var estargz: EStargzLayerInfo?
    }
    var name: String
    var digest: String
    var indexDigest: String?
    var mediaType: String
    var platform: String
    var created: String?
    var entrypoint: [String]?
    var cmd: [String]?
    var env: [String]?
    var workingDir: String?
    var totalSize: Int64
    var layers: [Layer]
    /// The image's gzip index artifact, when its registry has one.
    struct GzipIndexInfo: Encodable {
        var artifact: String
        var layers: [String]
    }
    var gzipIndex: GzipIndexInfo?

    init(_ image: ResolvedImage, name: String, estargz: [Digest: EStargzLayerInfo] = [:]) throws {
        self.name = name
        digest = image.manifestDescriptor.digest.description
        indexDigest = image.index?.descriptor.digest.description
        mediaType = image.manifestDescriptor.mediaType
        platform = [image.config.os, image.config.architecture, image.config.variant].compactMap { $0 }.joined(separator: "/")
        created = image.config.created
        entrypoint = image.config.config?.Entrypoint
        cmd = image.config.config?.Cmd
        env = image.config.config?.Env
        workingDir = image.config.config?.WorkingDir
        // Each size is a registry's number: valid alone, their sum may still not fit.
        totalSize = 0
        for layer in image.manifest.layers {
            let (sum, overflow) = totalSize.addingReportingOverflow(layer.size)
            guard !overflow else {
                throw OCIError.malformedDocument(mediaType: mediaType, reason: "the layer sizes add up to more than \(Int64.max) bytes")
            }
            totalSize = sum
        }
        layers = image.layers.map {
            Layer(
                digest: $0.descriptor.digest.description, size: $0.descriptor.size, mediaType: $0.descriptor.mediaType,
                diffID: $0.diffID.description, estargz: estargz[$0.descriptor.digest])
        }
    }
}

struct GC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gc", abstract: "Remove blobs, layers and partial downloads no image references.")
    @OptionGroup var global: GlobalOptions
    @Flag(name: .long, help: "Only report what would be removed.") var dryRun = false

    func run() async throws {
        let report = try global.openStore().collectGarbage(dryRun: dryRun)
        if global.json { return try printJSON(report) }
        print("\(dryRun ? "would remove" : "removed") \(report.removedBlobs) blobs, \(report.removedLayers) layers, \(report.removedSIFs) SIF files, \(report.removedPartials) partial downloads; \(formatBytes(report.freedBytes)) freed")
    }
}

struct Remove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rmi", abstract: "Remove an image name from the store (its content goes at the next gc).")
    @OptionGroup var global: GlobalOptions
    @Argument var image: String

    func run() async throws {
        let name = Puller.storeName(for: try parseLocation(image))
        guard try global.openStore().removeImage(named: name) else { throw StoreError.notFound("image '\(name)'") }
        if global.json {
            struct Output: Encodable { var removed: String }
            try printJSON(Output(removed: name))
        }
    }
}

struct DemoImageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo-image", abstract: "Write the demo image (3 layers: links, long names, whiteouts, a large file) to an OCI layout.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Destination oci:PATH:NAME (push it anywhere with slipway copy).") var destination: String
    @Option(name: .customLong("asset-mib"), help: "Size of the incompressible asset in MiB.") var assetMiB = 8
    @Option(name: .long, help: "Text of /version.txt.") var version = "1"

    func run() async throws {
        guard case .layout(let path, let name) = try parseLocation(destination) else {
            throw ValidationError("the destination must be an OCI layout: oci:PATH:NAME")
        }
        let store = try ContentStore(root: path)
        let lock = try await store.lockForWriting()
        defer { lock.release() }
        let descriptor = try DemoImage.build(into: store, name: name ?? "latest", largeFileBytes: assetMiB << 20, version: version)
        try printDigest(descriptor, json: global.json)
    }
}

struct Assemble: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Build an image in an OCI layout from layer tar files (uncompressed), in order, without Docker.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Destination oci:PATH:NAME.") var destination: String
    @Option(name: .long, help: "An uncompressed layer tar file; repeat for more layers, bottom first.") var layer: [String] = []
    @Option(name: .long, help: "Layer compression: gzip, zstd or none.") var compression: String = "gzip"
    @Option(name: .long, parsing: .upToNextOption, help: "Entrypoint of the image config.") var entrypoint: [String] = []

    func run() async throws {
        guard case .layout(let path, let name) = try parseLocation(destination) else {
            throw ValidationError("the destination must be an OCI layout: oci:PATH:NAME")
        }
        guard let kind = LayerCompression(rawValue: compression) else { throw ValidationError("unknown compression '\(compression)'") }
        guard !layer.isEmpty else { throw ValidationError("give at least one --layer") }
        let store = try ContentStore(root: path)
        let lock = try await store.lockForWriting()
        defer { lock.release() }
        var builder = ImageBuilder(store: store, compression: kind)
        for file in layer { try builder.addLayer(tarFile: file, comment: "slipway assemble \((file as NSString).lastPathComponent)") }
        let descriptor = try builder.commit(
            name: name ?? "latest", config: ImageConfig.ContainerConfig(Env: ["PATH=/usr/local/bin:/usr/bin:/bin"], Entrypoint: entrypoint.isEmpty ? nil : entrypoint))
        try printDigest(descriptor, json: global.json)
    }
}

/// A command's result when it is one manifest digest: bare on stdout, or as JSON.
func printDigest(_ descriptor: Descriptor, json: Bool) throws {
    if json {
        struct Output: Encodable { var digest: String; var size: Int64; var mediaType: String }
        try printJSON(Output(digest: descriptor.digest.description, size: descriptor.size, mediaType: descriptor.mediaType))
    } else {
        print(descriptor.digest)
    }
}

struct Convert: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert an image to eStargz (lazy-pullable, to a registry or layout), or to a SIF file for Apptainer or SingularityCE.",
        discussion: """
            --to sif: the image is pulled into the store, its layers extracted once into the store's layer cache, and \
            the squashfs partition built from their merged tree straight into FILE.sif (Slipway's own writer: gzip \
            at level 9 through libdeflate on every core), with the OCI config and a /.singularity.d runscript and \
            environment. SIFs are cached in the store by manifest digest: converting the same image again copies \
            the cached file. A new version of an image copies the compressed blocks of every file a recent SIF in \
            the store already holds, so only changed files are compressed. --squashfs-tool mksquashfs builds the \
            partition with mksquashfs instead, for comparison.

            --to oci-sif: SingularityCE's OCI-SIF: the OCI image inside a SIF, each layer a squashfs of its own \
            (whiteouts in overlayfs form) kept in the store by layer, so a new release builds only its new layers. \
            `slipway run --sif FILE` and `singularity run` (4.1 or later) run it.

            --to estargz: layers stream from the source one at a time (a registry source is not pulled first); layers already in \
            eStargz are kept. With --prioritize, the listed files (one path per line in access order, or the JSON \
            lines of `ctr-remote image optimize --record-out`) move to the front of their layer, followed by \
            .prefetch.landmark, so a lazy mount fetches them in one request.
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var decompression: DecompressionOptions
    @Argument(help: "Source image: a registry reference or oci:PATH[:NAME].") var source: String
    @Argument(help: "Destination: a registry reference or oci:PATH[:NAME] (estargz), or a file path (sif).") var destination: String
    @Option(name: .long, help: "Target format: estargz, sif or oci-sif.") var to: String = "estargz"
    @Option(name: .long, help: "Uncompressed bytes per chunk (each chunk is fetched on its own).") var chunkSize: Int = 4 << 20
    @Option(name: .long, help: "gzip level: 0-9 as gzip, 10-12 slower and smaller (libdeflate).")
    var compressionLevel: Int = EStargzWriterOptions.defaultCompressionLevel
    @Option(name: .long, help: "File listing the paths the workload reads, in access order.") var prioritize: String?
    @Flag(name: .long, help: "Skip prioritized paths that are in no layer instead of failing.") var allowMissing = false
    @Option(name: .long, help: "Credentials USER:PASSWORD for the destination registry (--creds is for the source).") var destCreds: String?
    @Option(name: .long, help: "What builds a SIF's squashfs: native or mksquashfs.") var squashfsTool: String = "native"

    func validate() throws {
        guard ["estargz", "sif", "oci-sif"].contains(to) else { throw ValidationError("--to takes estargz, sif or oci-sif") }
        if to != "estargz", prioritize != nil { throw ValidationError("--prioritize applies to --to estargz only") }
        guard SIFConverter.SquashfsTool(rawValue: squashfsTool) != nil else { throw ValidationError("--squashfs-tool takes native or mksquashfs") }
        // Readers refuse a layer with a larger chunk (it bounds a mount's memory), so none is written.
        guard chunkSize > 0, Int64(chunkSize) <= EStargzReader.maxChunkSize else {
            throw ValidationError("--chunk-size must be between 1 and \(EStargzReader.maxChunkSize) bytes")
        }
        guard EStargzWriterOptions.compressionLevels.contains(compressionLevel) else {
            throw ValidationError("--compression-level takes 0 to 12")
        }
        if let destCreds, !destCreds.contains(":") { throw ValidationError("--dest-creds takes USER:PASSWORD") }
    }

    func run() async throws {
        if to == "sif" || to == "oci-sif" {
            try await convertToSIF()
            return
        }
        let (from, to) = try parseTransfer(from: source, to: destination)
        let prioritized = try prioritize.map { try PrioritizedFiles(contentsOf: $0) } ?? PrioritizedFiles()
        let store = try global.openStore()
        let display = global.makeProgress()
        let report = try await global.withSession(for: [from, to], destinationCreds: destCreds) { session in
            let sourceImage = try session.source(for: from, backedBy: store)
            let target = try session.destination(for: to)
            let image = try await sourceImage.resolve(platform: session.options.platform)
            let converter = EStargzConverter(
                staging: (target as? LayoutDestination)?.store ?? store,
                options: EStargzWriterOptions(chunkSize: chunkSize, compressionLevel: compressionLevel),
                prioritized: prioritized, allowMissingPrioritizedFiles: allowMissing, progress: display.handler)
            return try await converter.convert(image, from: sourceImage, to: target).1
        }
        display.finish()
        if global.json {
            try printJSON(report)
        } else {
            if !report.missingPrioritizedFiles.isEmpty {
                let count = report.missingPrioritizedFiles.count
                FileHandle.standardError.write(Data("slipway: skipped \(count) prioritized paths that no layer has\n".utf8))
            }
            print(report.manifestDigest)
        }
    }

    private func convertToSIF() async throws {
        let location = try parseLocation(source)
        let output = resolvedPath(destination)
        guard FileManager.default.fileExists(atPath: (output as NSString).deletingLastPathComponent) else {
            throw ValidationError("the directory of \(destination) does not exist")
        }
        let store = try global.openStore()
        let display = global.makeProgress()
        let report = try await global.withSession(for: [location]) { session in
            // Layers are extracted into the store's layer cache while later ones still download.
            let (image, _, extracted) = try await Puller(session: session, store: store, progress: display.handler).pullAndCacheLayers(location)
            let lock = try await store.lockForWriting()
            defer { lock.release() }
            if to == "oci-sif" {
                return SIFReport.ociSIF(try await OCISIFConverter(store: store, progress: display.handler).convert(image, reference: source, to: output))
            }
            var converter = SIFConverter(store: store, progress: display.handler)
            converter.squashfsTool = SIFConverter.SquashfsTool(rawValue: squashfsTool) ?? .native
            var report = try await converter.convert(image, reference: source, to: output)
            report.layersExtracted += extracted
            return SIFReport.sif(report)
        }
        display.finish()
        switch report {
        case .sif(let report):
            if global.json { return try printJSON(report) }
            let how = report.cached ? "from the store's cache" : "\(report.layersExtracted) layers extracted"
            FileHandle.standardError.write(Data("slipway: wrote \(output) (\(formatBytes(report.bytes)), \(how), \(String(format: "%.1f", report.seconds)) s)\n".utf8))
        case .ociSIF(let report):
            if global.json { return try printJSON(report) }
            let how = report.cached ? "from the store's cache" : "\(report.layersBuilt) of \(report.layers) layer squashfs images built"
            FileHandle.standardError.write(Data("slipway: wrote \(output) (\(formatBytes(report.bytes)), \(how), \(String(format: "%.1f", report.seconds)) s)\n".utf8))
        }
        print(output)
    }

}

private enum SIFReport: Sendable {
    case sif(SIFConverter.Report)
    case ociSIF(OCISIFConverter.Report)
}

extension Pull: DecompressingCommand, WritesPartialOutput {}

extension Unpack: DecompressingCommand, WritesPartialOutput {}

extension Convert: DecompressingCommand, WritesPartialOutput {}
