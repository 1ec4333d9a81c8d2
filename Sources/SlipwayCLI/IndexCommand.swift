import ArgumentParser
import Foundation
import GzipIndex
import Images
import OCI
import Slipway

struct IndexCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "index",
        abstract: "Make an image's plain gzip layers lazily mountable without converting it: build their gzip indexes.",
        discussion: """
            Pulls the image into the store (as `slipway pull`), reads each plain gzip layer once and records where \
            every file is and where inflating can start every few MiB. The indexes are stored as an OCI artifact \
            whose subject is the image's manifest; `slipway mount` and `run --mode lazy` then read those layers \
            with Range requests. --push publishes the artifact next to the image (through the Referrers API, or \
            the fallback tag sha256-HEX on registries without it, such as docker-registry 2.8), so every node \
            finds it. The image itself is not changed. `slipway serve --index` builds the same indexes for every \
            image that passes through a cluster's cache.
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Image reference or oci:PATH[:NAME].") var image: String
    @Flag(name: .long, help: "Push the index artifact to the image's registry.") var push = false
    @Option(name: .long, help: ArgumentHelp(
        "Files to prefetch first when mounted, in access order (one path per line, or `slipway mount --record` output).",
        valueName: "FILE"))
    var prioritize: String?

    func run() async throws {
        let location = try parseLocation(image)
        if push, case .layout = location { throw ValidationError("--push needs a registry reference") }
        let prioritized = try prioritize.map { try PrioritizedFiles(contentsOf: resolvedPath($0)).entries.map(\.path) } ?? []
        let store = try global.openStore()
        let display = global.makeProgress()
        let began = ContinuousClock.now
        let (resolved, built) = try await global.withSession(for: [location]) { session in
            // Pulled first, under its name, as `slipway pull` would: the layers are read from the store, and the
            // index lives there as long as its image (gc drops referrers of images no longer in the store).
            let (resolved, _) = try await Puller(session: session, store: store, progress: display.handler).pull(location)
            let built = try await GzipIndexes.build(for: resolved, store: store, prioritizedFiles: prioritized, progress: display.handler)
            if push, case .registry(let reference) = location, let artifact = built.artifact {
                try await GzipIndexes.push(
                    artifact, subject: resolved.manifestDescriptor.digest, store: store, client: session.pushClient(for: reference.registry),
                    repository: reference.repository)
            }
            return (resolved, built)
        }
        display.finish()
        let seconds = began.duration(to: .now).seconds
        let summary = IndexSummary(resolved, built: built, pushed: push, seconds: seconds)
        if global.json { return try printJSON(summary) }
        for layer in summary.layers {
            print("\(layer.digest)  \(formatBytes(layer.size))  \(layer.files) files, \(layer.checkpoints) checkpoints, index \(formatBytes(layer.indexSize))")
        }
        let skipped = resolved.layers.count - summary.layers.count
        print("index \(summary.artifact ?? "none") for \(summary.image)\(push ? ", pushed" : "")" + (skipped > 0 ? "; \(skipped) layers are not plain gzip" : ""))
    }
}

struct IndexSummary: Encodable {
    struct Layer: Encodable {
        var digest: String
        var size: Int64
        var files: Int
        var checkpoints: Int
        var indexSize: Int64
    }
    var image: String
    var artifact: String?
    var pushed: Bool
    var seconds: Double
    var layers: [Layer]

    init(_ image: ResolvedImage, built: ImageIndexes, pushed: Bool, seconds: Double) {
        self.image = image.manifestDescriptor.digest.description
        artifact = built.artifact?.digest.description
        self.pushed = pushed
        self.seconds = seconds
        layers = image.layers.compactMap { layer in
            guard let index = built.layers[layer.descriptor.digest] else { return nil }
            return Layer(
                digest: layer.descriptor.digest.description, size: layer.descriptor.size,
                files: index.entries.filter { $0.type == "reg" }.count, checkpoints: index.checkpoints.count,
                indexSize: built.blobSizes[layer.descriptor.digest] ?? 0)
        }
    }
}
