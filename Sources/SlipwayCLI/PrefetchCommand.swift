import ArgumentParser
import ContentStore
import Foundation
import Images
import OCI
import Slipway
import Snapshotter

/// `slipway prefetch REF`: the pre-pull phase of a job (a DaemonSet's, or `srun --ntasks-per-node=1` on every
/// node of an allocation), so that `slipway run` afterwards starts from the store without a transfer.
struct Prefetch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make an image ready to run here: pull it and extract its layers into the store's layer cache.",
        discussion: """
            Afterwards `slipway run REF` (default --pull missing) starts without asking the registry. Run it on \
            every node of an allocation before the job: `srun --ntasks-per-node=1 slipway prefetch REF`. With a \
            store on a shared filesystem the nodes share the work: each blob is downloaded once and each layer \
            extracted once, and the other nodes wait for it and reuse it.

            On a Kubernetes node, --snapshotter SOCKET asks the node's `slipway snapshotter` to do it, in its \
            store and with its credentials: containerd's next pull of the image then moves no layer, and its \
            containers run on the extracted layers with overlayfs alone (no lazy mount). A pod that prefetches \
            (examples/kubernetes/prefetch-daemonset.yaml) needs only that socket.
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var decompression: DecompressionOptions
    @Option(help: ArgumentHelp("Ask the slipway snapshotter serving this socket to prefetch, into its own store.", valueName: "SOCKET"))
    var snapshotter: String?
    @Argument(help: "The image reference.") var image: String

    func run() async throws {
        let location = try parseLocation(image)
        if let snapshotter {
            try await prefetch(through: snapshotter)
            return
        }
        let display = global.makeProgress()
        let (report, extracted, seconds) = try await prefetchLayers(location, with: global, into: try global.openStore(), progress: display.handler)
        display.finish()
        if global.json {
            struct Output: Encodable { var transfer: TransferReport; var layersExtracted: Int; var seconds: Double }
            try printJSON(Output(transfer: report, layersExtracted: extracted, seconds: seconds))
        } else {
            let summary = "\(image): \(report.layers) layers, \(formatBytes(report.bytesTransferred)) transferred, "
                + "\(extracted) extracted, \(String(format: "%.1f", seconds)) s"
            if !global.quiet { FileHandle.standardError.write(Data("slipway: \(summary)\n".utf8)) }
            print(report.manifestDigest)
        }
    }
}

extension Prefetch {
    private func prefetch(through socket: String) async throws {
        let path = resolvedPath(socket)
        guard FileManager.default.fileExists(atPath: path) else {
            throw ValidationError("no snapshotter socket at \(path) (is `slipway snapshotter --address \(path)` running?)")
        }
        let result = try await NodePrefetchClient.prefetch(socket: path, reference: image, platform: global.platform)
        if global.json {
            struct Output: Encodable { var manifestDigest: String; var layers: Int; var bytesTransferred: Int64; var layersExtracted: Int; var seconds: Double }
            try printJSON(Output(
                manifestDigest: result.manifestDigest, layers: result.layers, bytesTransferred: result.bytesTransferred,
                layersExtracted: result.layersExtracted, seconds: result.seconds))
        } else {
            let summary = "\(image) on the snapshotter at \(path): \(result.layers) layers, \(formatBytes(result.bytesTransferred)) transferred, "
                + "\(result.layersExtracted) extracted, \(String(format: "%.1f", result.seconds)) s"
            if !global.quiet { FileHandle.standardError.write(Data("slipway: \(summary)\n".utf8)) }
            print(result.manifestDigest)
        }
    }
}

extension Prefetch: DecompressingCommand, WritesPartialOutput {}

/// What `slipway prefetch` does, here or in a node's snapshotter (`--snapshotter`): pull `location` into `store`
/// and extract its layers. The seconds cover both: the transfer report times the download only, and the layers
/// may still be extracting after it.
func prefetchLayers(
    _ location: ImageLocation, with global: GlobalOptions, into store: ContentStore, progress: @escaping ProgressHandler = { _ in }
) async throws -> (TransferReport, extracted: Int, seconds: Double) {
    let started = ContinuousClock.now
    let (_, report, extracted) = try await global.withSession(for: [location]) { session in
        try await Puller(session: session, store: store, progress: progress).pullAndCacheLayers(location)
    }
    return (report, extracted, started.secondsElapsed)
}
