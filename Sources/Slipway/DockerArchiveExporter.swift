#if canImport(Glibc)
import Glibc
#endif
import Archive
import Blocking
import ContentStore
import Foundation
import Images
import OCI

/// `slipway export REF --to docker-archive FILE`: the image as `docker save` writes it, which `docker load`,
/// `podman load`, skopeo's `docker-archive:` transport and Warewulf's `wwctl image import FILE` read. Each layer
/// is stored uncompressed as `HEX/layer.tar` (HEX its diffID, which the bytes are checked against), beside the
/// config as `HEX.json` and `manifest.json`.
public struct DockerArchiveExporter: Sendable {
    public let store: ContentStore
    public var progress: ProgressHandler

    public init(store: ContentStore, progress: @escaping ProgressHandler = { _ in }) {
        self.store = store
        self.progress = progress
    }

    public struct Report: Sendable, Codable {
        public var image: String
        public var output: String
        public var bytes: Int64
        public var layers: Int
        public var seconds: Double
    }

    private struct ArchiveManifest: Encodable {
        var Config: String
        var RepoTags: [String]
        var Layers: [String]
    }

    /// Writes the archive of `image` (its blobs already in the store) to `output`, named `repoTag` inside when
    /// given; the file appears complete or not at all.
    public func export(_ image: ResolvedImage, repoTag: String?, to output: String) async throws -> Report {
        let started = ContinuousClock.now
        let layers = image.layers.map { (blob: store.blobPath($0.descriptor.digest), diffID: $0.diffID) }
        let configName = "\(image.manifest.config.digest.hex).json"
        let manifest = [ArchiveManifest(Config: configName, RepoTags: repoTag.map { [$0] } ?? [], Layers: layers.map { "\($0.diffID.hex)/layer.tar" })]
        let manifestBytes = Array(try JSONEncoder.sortedKeys.encode(manifest))
        let progress = self.progress
        try await runBlocking {
            try writeFileAtomically(to: output) { descriptor, temporary in
                var offset: Int64 = 0
                var writer = TarWriter(longNameFormat: .pax) { chunk in
                    try writeAll(chunk, to: descriptor, at: offset, path: temporary)
                    offset += Int64(chunk.count)
                }
                for (index, layer) in layers.enumerated() {
                    progress(.message("layer \(index + 1)/\(layers.count)"))
                    try Self.appendLayer(layer.blob, diffID: layer.diffID, to: &writer, scratch: "\(temporary).layer")
                }
                try writer.write(TarHeader(name: configName, type: .regular, mode: 0o644), contents: image.configBytes)
                try writer.write(TarHeader(name: "manifest.json", type: .regular, mode: 0o644), contents: manifestBytes)
                try writer.finish()
            }
            chmod(output, 0o644)
        }
        var info = stat()
        stat(output, &info)
        let elapsed = ContinuousClock.now - started
        return Report(
            image: image.name, output: output, bytes: Int64(info.st_size), layers: layers.count,
            seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }

    /// The layer's tar, decompressed into `scratch` first (a tar entry states its size before its bytes) and
    /// checked against its diffID before a byte of it goes into the archive.
    private static func appendLayer(_ blob: String, diffID: Digest, to writer: inout TarWriter, scratch: String) throws {
        let compression = try LayerCompression.detect(Array(readPrefix(of: blob)))
        let decoded = try DecodedLayer(layerAt: blob, compression: compression, name: diffID.description)
        let partial = PartialOutput.register(scratch)
        let descriptor = open(scratch, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw ConvertError.io(path: scratch, reason: String(cString: strerror(errno))) }
        defer {
            close(descriptor)
            unlink(scratch)
            partial.end()
        }
        var size: Int64 = 0
        while let chunk = try decoded.nextChunk() {
            try writeAll(chunk, to: descriptor, at: size, path: scratch)
            size += Int64(chunk.count)
        }
        let (actual, _) = try decoded.finishedDigest()
        guard actual == diffID.description else {
            throw ConvertError.invalidSource("layer \(diffID) decompresses to \(actual), not the diffID its config lists")
        }
        var header = TarHeader(name: "\(diffID.hex)/layer.tar", type: .regular, mode: 0o644)
        header.size = size
        try writer.writeHeader(TarHeader(name: diffID.hex, type: .directory, mode: 0o755))
        try writer.writeHeader(header)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var position: Int64 = 0
        while position < size {
            let got = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, Int(position)) }
            if got < 0, errno == EINTR { continue }
            guard got > 0 else { throw ConvertError.io(path: scratch, reason: "shorter than the \(size) bytes written") }
            try buffer.withUnsafeBytes { try writer.writeContents(UnsafeRawBufferPointer(rebasing: $0[..<got])) }
            position += Int64(got)
        }
    }

    private static func readPrefix(of path: String) throws -> [UInt8] {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw ConvertError.io(path: path, reason: "cannot open the layer blob") }
        defer { try? handle.close() }
        return Array(try handle.read(upToCount: 4) ?? Data())
    }
}
