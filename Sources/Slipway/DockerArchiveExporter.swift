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

    /// Writes the archive of `image` to `output`, named `repoTag` inside when given; the file appears complete or
    /// not at all.
    public func export(_ image: ResolvedImage, repoTag: String?, to output: String) async throws -> Report {
        let started = ContinuousClock.now
        let configName = "\(image.manifest.config.digest.hex).json"
        let manifest = [
            ArchiveManifest(Config: configName, RepoTags: repoTag.map { [$0] } ?? [], Layers: image.layers.map { "\($0.diffID.hex)/layer.tar" })
        ]
        let manifestBytes = Array(try JSONEncoder.sortedKeys.encode(manifest))
        try await writeFileAtomically(to: output) { descriptor, temporary in
            let archive = ArchiveFile(descriptor: descriptor, path: temporary)
            for (index, layer) in image.layers.enumerated() {
                progress(.message("layer \(index + 1)/\(image.layers.count)"))
                // A tar entry states its size before its bytes: the layer is decoded into a scratch file first,
                // and checked against its diffID before a byte of it goes into the archive.
                let scratch = "\(temporary).layer"
                let partial = PartialOutput.register(scratch)
                defer {
                    unlink(scratch)
                    partial.end()
                }
                let size = try await layer.withUncompressedTar { decoded in try Self.spool(decoded, to: scratch) }
                try await runBlocking { try archive.append(file: scratch, size: size, as: "\(layer.diffID.hex)/layer.tar") }
            }
            try await runBlocking {
                try archive.append(image.configBytes, as: configName)
                try archive.append(manifestBytes, as: "manifest.json")
                try archive.finish()
            }
        }
        var info = stat()
        stat(output, &info)
        return Report(image: image.name, output: output, bytes: Int64(info.st_size), layers: image.layers.count, seconds: started.secondsElapsed)
    }

    /// Writes the decoded tar to `path`; its size.
    private static func spool(_ decoded: DecodedLayer, to path: String) throws -> Int64 {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw ConvertError.io(path: path, reason: String(cString: strerror(errno))) }
        defer { close(descriptor) }
        var size: Int64 = 0
        while let chunk = try decoded.nextChunk() {
            try writeAll(chunk, to: descriptor, at: size, path: path)
            size += Int64(chunk.count)
        }
        return size
    }
}

/// The tar being written, used by one thread at a time.
private final class ArchiveFile: @unchecked Sendable {
    private var writer: TarWriter
    private let path: String

    init(descriptor: Int32, path: String) {
        self.path = path
        var offset: Int64 = 0
        writer = TarWriter(longNameFormat: .pax) { chunk in
            try writeAll(chunk, to: descriptor, at: offset, path: path)
            offset += Int64(chunk.count)
        }
    }

    func append(_ bytes: [UInt8], as name: String) throws {
        try writer.write(TarHeader(name: name, type: .regular, mode: 0o644), contents: bytes)
    }

    /// `file`'s `size` bytes as the entry `name`, below a directory entry for its parent.
    func append(file: String, size: Int64, as name: String) throws {
        try writer.writeHeader(TarHeader(name: (name as NSString).deletingLastPathComponent, type: .directory, mode: 0o755))
        var header = TarHeader(name: name, type: .regular, mode: 0o644)
        header.size = size
        try writer.writeHeader(header)
        let descriptor = open(file, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw ConvertError.io(path: file, reason: String(cString: strerror(errno))) }
        defer { close(descriptor) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var position: Int64 = 0
        while position < size {
            let got = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, Int(position)) }
            if got < 0, errno == EINTR { continue }
            guard got > 0 else { throw ConvertError.io(path: file, reason: "shorter than the \(size) bytes written") }
            try buffer.withUnsafeBytes { try writer.writeContents(UnsafeRawBufferPointer(rebasing: $0[..<got])) }
            position += Int64(got)
        }
    }

    func finish() throws { try writer.finish() }
}
