#if canImport(Glibc)
import Glibc
#endif
import Blocking
import CLinux
import ContentStore
import Crypto
import Foundation
import ImageTree
import Images
import OCI
import SIF
import Squashfs

/// `slipway convert REF FILE.sif --to oci-sif`: SingularityCE's OCI-SIF, the OCI image itself inside a SIF. Each
/// layer becomes a squashfs (`application/vnd.sylabs.image.layer.v1.squashfs`, whiteouts in overlayfs form, its
/// digest and diffID the sha256 of the squashfs), stored as an `OCI.Blob` object with the config and manifest
/// beside it, and the image index as the `OCI.RootIndex` object.
///
/// Layer squashfs images are kept in the store by the layer's diffID, so a new release of an image builds only
/// its new layers and copies the others into the new file.
public struct OCISIFConverter: Sendable {
    public static let layerMediaType = "application/vnd.sylabs.image.layer.v1.squashfs"

    public let store: ContentStore
    public var squashfs = SquashfsWriter.Options()
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
        public var cached: Bool
        public var layers: Int
        /// Layer squashfs images built by this conversion; the others came from the store.
        public var layersBuilt: Int
        public var seconds: Double
    }

    public func convert(_ image: any Image, reference: String, to output: String) async throws -> Report {
        let started = ContinuousClock.now
        let digest = image.manifestDescriptor.digest
        let cached = "\(store.root)/oci-sif/\(digest.algorithm.rawValue)/\(digest.hex).sif"
        var built = 0
        let fromCache = FileManager.default.fileExists(atPath: cached)
        if !fromCache {
            _ = try await Unpacker(store: store, progress: progress).cacheLayers(image)
            var layers: [(path: String, digest: OCI.Digest, size: Int64)] = []
            for (index, layer) in image.layers.enumerated() {
                progress(.message("squashfs of layer \(index + 1)/\(image.layers.count)"))
                let (path, made) = try await layerSquashfs(layer.diffID)
                if made { built += 1 }
                let (digest, size) = try await runBlocking { try Self.digest(ofFile: path) }
                layers.append((path, digest, size))
            }
            try await assemble(image, layers: layers, into: cached)
        }
        try await runBlocking { try SIFConverter.copyOut(cached, to: output) }
        var info = stat()
        stat(output, &info)
        return Report(
            image: reference, manifestDigest: digest.description, output: output, bytes: Int64(info.st_size), cached: fromCache,
            layers: image.layers.count, layersBuilt: built, seconds: started.secondsElapsed)
    }

    /// The squashfs of one layer as overlayfs reads a lower directory, from the store, made now if missing.
    private func layerSquashfs(_ diffID: OCI.Digest) async throws -> (path: String, built: Bool) {
        let directory = "\(store.root)/squashfs-layers/\(diffID.algorithm.rawValue)"
        let path = "\(directory)/\(diffID.hex).sqfs"
        if FileManager.default.fileExists(atPath: path) { return (path, false) }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let options = squashfs
        try await writeFileAtomically(to: path) { [store] descriptor, temporary in
            try await runBlocking {
                let tree = ImageTree(overlayLower: try LayerEntryCache(store: store).entries(of: diffID))
                _ = try SquashfsWriter.write(tree, to: descriptor, path: temporary, at: 0, options: options)
            }
        }
        return (path, true)
    }

    private func assemble(_ image: any Image, layers: [(path: String, digest: OCI.Digest, size: Int64)], into cached: String) async throws {
        try FileManager.default.createDirectory(atPath: (cached as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let builder = SIFBuilder(createdAt: Int64(SquashfsWriter.defaultModificationTime), id: [UInt8](repeating: 0, count: 16))
        let layerDescriptors = layers.map { Descriptor(mediaType: Self.layerMediaType, digest: $0.digest, size: $0.size) }
        let config = try Self.config(of: image, diffIDs: layers.map(\.digest))
        let configDescriptor = Descriptor(mediaType: MediaType.ociConfig, digest: OCI.Digest(sha256: SHA256.hash(data: config)), size: Int64(config.count))
        let manifest = Array(try JSONEncoder.sortedKeys.encode(Manifest(config: configDescriptor, layers: layerDescriptors)))
        let manifestDescriptor = Descriptor(mediaType: MediaType.ociManifest, digest: OCI.Digest(sha256: SHA256.hash(data: manifest)), size: Int64(manifest.count))
        let index = Array(try JSONEncoder.sortedKeys.encode(Index(manifests: [manifestDescriptor])))
        try await writeFileAtomically(to: cached) { descriptor, temporary in
            try await runBlocking {
                var cursor = builder.dataOffset
                var placed: [SIFBuilder.PlacedObject] = []
                for layer in layers {
                    try appendFile(layer.path, size: layer.size, to: descriptor, at: cursor, path: temporary)
                    placed.append(.oci(.ociBlob, offset: cursor, size: layer.size, digest: layer.digest.description))
                    cursor += layer.size
                }
                for (bytes, type) in [(config, SIFDataType.ociBlob), (manifest, .ociBlob), (index, .ociRootIndex)] {
                    try writeAll(bytes, to: descriptor, at: cursor, path: temporary)
                    placed.append(.oci(type, offset: cursor, size: Int64(bytes.count), digest: OCI.Digest(sha256: SHA256.hash(data: bytes)).description))
                    cursor += Int64(bytes.count)
                }
                try builder.writeDescriptors(to: temporary, objects: placed)
            }
        }
    }

    /// The image's config with the squashfs layers' digests as its diffIDs; every other field kept as it was.
    static func config(of image: any Image, diffIDs: [OCI.Digest]) throws -> [UInt8] {
        let original: [UInt8]
        if let resolved = image as? ResolvedImage { original = resolved.configBytes } else { original = Array(try JSONEncoder.sortedKeys.encode(image.config)) }
        guard var object = try JSONSerialization.jsonObject(with: Data(original)) as? [String: Any] else {
            throw ConvertError.invalidSource("the image config is not a JSON object")
        }
        object["rootfs"] = ["type": "layers", "diff_ids": diffIDs.map(\.description)]
        return Array(try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
    }

    static func digest(ofFile path: String) throws -> (OCI.Digest, Int64) {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw ConvertError.io(path: path, reason: String(cString: strerror(errno))) }
        defer { close(descriptor) }
        var hasher = SHA256()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var size: Int64 = 0
        while true {
            let got = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if got < 0, errno == EINTR { continue }
            guard got >= 0 else { throw ConvertError.io(path: path, reason: String(cString: strerror(errno))) }
            if got == 0 { break }
            buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[..<got])) }
            size += Int64(got)
        }
        return (OCI.Digest(sha256: hasher.finalize()), size)
    }
}
