import ArgumentParser
import Foundation
import OCI
import Slipway

struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write an image as a docker-archive file or as a root directory, for tools that import one of those.",
        discussion: """
            --to docker-archive FILE: the tar `docker save` writes, which `docker load`, `podman load`, skopeo \
            (docker-archive:FILE) and Warewulf's `wwctl image import FILE` read. Layers are stored uncompressed \
            and checked against their diffIDs.

            --to rootfs DIR: the image's root filesystem, as `slipway unpack` writes it (Warewulf imports a \
            directory too: `wwctl image import DIR NAME`).
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var decompression: DecompressionOptions
    @Argument(help: "Image reference or oci:PATH[:NAME].") var image: String
    @Argument(help: "The file (docker-archive) or directory (rootfs) to write.") var destination: String
    @Option(name: .long, help: "docker-archive or rootfs.") var to: String

    func validate() throws {
        guard to == "docker-archive" || to == "rootfs" else { throw ValidationError("--to takes docker-archive or rootfs") }
    }

    func run() async throws {
        let location = try parseLocation(image)
        let store = try global.openStore()
        let display = global.makeProgress()
        if to == "rootfs" {
            let (_, unpacked) = try await global.withSession(for: [location]) { session in
                try await Puller(session: session, store: store, progress: display.handler).pullAndUnpack(location, to: destination)
            }
            display.finish()
            if global.json { return try printJSON(unpacked) }
            print(unpacked.directory)
            return
        }
        let output = resolvedPath(destination)
        guard FileManager.default.fileExists(atPath: (output as NSString).deletingLastPathComponent) else {
            throw ValidationError("the directory of \(destination) does not exist")
        }
        let report = try await global.withSession(for: [location]) { session in
            let (resolved, _) = try await Puller(session: session, store: store, progress: display.handler).pull(location)
            return try await DockerArchiveExporter(store: store, progress: display.handler).export(resolved, repoTag: Self.repoTag(location), to: output)
        }
        display.finish()
        if global.json { return try printJSON(report) }
        FileHandle.standardError.write(Data("slipway: wrote \(output) (\(formatBytes(report.bytes)), \(report.layers) layers)\n".utf8))
        print(output)
    }

    /// The name `docker load` gives the image: the reference with its tag, or the layout's name.
    static func repoTag(_ location: ImageLocation) -> String? {
        switch location {
        case .registry(let reference):
            guard let tag = reference.tag else { return nil }
            return "\(reference.registry)/\(reference.repository):\(tag)"
        case .layout(_, let tag):
            guard let tag, !tag.isEmpty else { return nil }
            return tag.contains(":") ? tag : "\(tag):latest"
        }
    }
}

extension Export: DecompressingCommand, WritesPartialOutput {}
