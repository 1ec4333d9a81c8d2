import Archive
import ContentStore
import Foundation
import Images
import OCI
import Synchronization
import Testing
import TestSupport

@testable import Slipway

/// Images built without Docker: each layer's blob is what its manifest says, and decompresses to the diffID its
/// config promises.
@Suite(.tags(.unit)) struct ImageBuilderTests {
    @Test func demoImageLayersVerifyAgainstTheirDiffIDs() async throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let built = try DemoImage.build(into: store, name: "demo", largeFileBytes: 64 << 10)
        let image = try await LayoutImageSource(store: store, imageName: "demo").resolve(platform: .host)
        #expect(image.manifestDescriptor.digest == built.digest)
        #expect(image.manifest.layers.count == 3)
        #expect(image.config.history?.count == 3)
        #expect(image.config.config?.Entrypoint == ["/opt/app/run.sh"])
        for layer in image.layers {
            #expect(layer.descriptor.mediaType == MediaType.ociLayerGzip)
            let path = try #require(layer.localFile)
            #expect(fileDigest(path) == layer.descriptor.digest)
            let (diffID, _) = try LayerDigester.diffID(ofLayerAt: path, compression: .gzip)
            #expect(diffID == layer.diffID.description)
        }
    }

    @Test(arguments: [LayerCompression.none, .gzip, .zstd])
    func layersVerifyWithEveryCompression(_ compression: LayerCompression) async throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        var builder = ImageBuilder(store: store, compression: compression)
        try builder.addLayer([file("etc/hostname", "builder\n"), file("bin/tool", "#!/bin/sh\n")], comment: "one")
        try builder.addLayer([file("data", String(repeating: "x", count: 10_000))], comment: "two")
        try builder.commit(name: "built", config: ImageConfig.ContainerConfig(Cmd: ["/bin/tool"]), platform: Platform(os: "linux", architecture: "riscv64"))
        let image = try await LayoutImageSource(store: store, imageName: "built").resolve(platform: Platform(os: "linux", architecture: "riscv64"))
        #expect(image.config.architecture == "riscv64")
        #expect(image.config.history?.map(\.created_by) == ["one", "two"])
        for layer in image.layers {
            #expect(MediaType.layerCompression(layer.descriptor.mediaType)?.rawValue == (compression == .none ? "uncompressed" : compression.rawValue))
            let path = try #require(layer.localFile)
            #expect(fileDigest(path) == layer.descriptor.digest)
            #expect(try LayerDigester.diffID(ofLayerAt: path, compression: compression).diffID == layer.diffID.description)
            if compression == .none { #expect(layer.diffID == layer.descriptor.digest) }
        }
    }

    @Test func sameInputsGiveTheSameDigests() throws {
        let first = try ScratchDirectory()
        let second = try ScratchDirectory()
        let a = try DemoImage.build(into: try ContentStore(root: first.path), name: "demo", largeFileBytes: 4096)
        let b = try DemoImage.build(into: try ContentStore(root: second.path), name: "demo", largeFileBytes: 4096)
        #expect(a == b)
        let c = try DemoImage.build(into: try ContentStore(root: second.path), name: "demo", largeFileBytes: 4096, version: "2")
        #expect(c.digest != a.digest)
    }
}

/// Copying between layouts in-process: every blob verified into the destination, the name last.
@Suite(.tags(.unit)) struct CopierTests {
    @Test func layoutImageCopiesToAnotherLayoutAndIsNamedAfterItsBlobs() async throws {
        let from = try ScratchDirectory()
        let to = try ScratchDirectory()
        let sourceStore = try ContentStore(root: from.path)
        try DemoImage.build(into: sourceStore, name: "demo", largeFileBytes: 64 << 10)
        let source = LayoutImageSource(store: sourceStore, imageName: "demo")
        let image = try await source.resolve(platform: .host)
        let destinationStore = try ContentStore(root: to.path)
        let destination = RecordingDestination(LayoutDestination(store: destinationStore, imageName: "copied"))

        let report = try await Copier(concurrency: 2).copy(image, from: source, to: destination)

        let everyBlob = image.manifest.layers + [image.manifest.config, image.manifestDescriptor]
        let atTag = try #require(destination.stateWhenTagged)
        #expect(atTag.missingBlobs.isEmpty, "named before its blobs were there: \(atTag.missingBlobs)")
        #expect(atTag.namedBefore == nil)
        #expect(try destinationStore.image(named: "copied")?.digest == image.manifestDescriptor.digest)
        for blob in everyBlob { #expect(fileDigest(destinationStore.blobPath(blob.digest)) == blob.digest) }
        #expect(report.layers == 3)
        #expect(report.manifestDigest == image.manifestDescriptor.digest.description)
        #expect(report.bytesTransferred == image.totalLayerBytes + Int64(image.configBytes.count))

        // Copying again moves no layer.
        let again = try await Copier().copy(image, from: source, to: LayoutDestination(store: destinationStore, imageName: "copied"))
        #expect(again.bytesTransferred == Int64(image.configBytes.count))
    }

    @Test func failedBlobLeavesTheImageUnnamed() async throws {
        let from = try ScratchDirectory()
        let to = try ScratchDirectory()
        let sourceStore = try ContentStore(root: from.path)
        try DemoImage.build(into: sourceStore, name: "demo", largeFileBytes: 4096)
        let layout = LayoutImageSource(store: sourceStore, imageName: "demo")
        let image = try await layout.resolve(platform: .host)
        let failing = image.manifest.layers[1].digest
        let destinationStore = try ContentStore(root: to.path)
        await #expect(throws: SourceFailure.self) {
            try await Copier(concurrency: 1).copy(
                image, from: RemoteLikeSource(layout, failing: failing), to: LayoutDestination(store: destinationStore, imageName: "copied"))
        }
        #expect(try destinationStore.image(named: "copied") == nil)
        #expect(!destinationStore.hasBlob(image.manifestDescriptor))
    }
}

/// Choosing one platform's manifest from an index.
@Suite(.tags(.unit)) struct PlatformSelectionTests {
    let amd64 = Platform(os: "linux", architecture: "amd64")
    let arm64 = Platform(os: "linux", architecture: "arm64")

    /// A layout whose image "multi" is an index of one manifest per platform.
    func multiPlatformLayout(_ directory: ScratchDirectory, platforms: [Platform]) throws -> (ContentStore, [Descriptor]) {
        let layout = try ContentStore(root: directory.path)
        var entries: [Descriptor] = []
        for platform in platforms {
            let config = try store(ImageConfig(platform: platform, config: nil, diffIDs: []), mediaType: MediaType.ociConfig, in: layout)
            var entry = try store(Manifest(config: config, layers: []), mediaType: MediaType.ociManifest, in: layout)
            entry.platform = platform
            entry.annotations = ["note": platform.description]
            entries.append(entry)
        }
        try layout.setImage(named: "multi", to: try store(Index(manifests: entries), mediaType: MediaType.ociIndex, in: layout))
        return (layout, entries)
    }

    @Test func manifestOfTheWantedPlatformIsChosen() async throws {
        let directory = try ScratchDirectory()
        let (layout, entries) = try multiPlatformLayout(directory, platforms: [amd64, arm64])
        let source = LayoutImageSource(store: layout, imageName: "multi")
        for (platform, entry) in zip([amd64, arm64], entries) {
            let image = try await source.resolve(platform: platform)
            #expect(image.manifestDescriptor == Descriptor(mediaType: MediaType.ociManifest, digest: entry.digest, size: entry.size))
            #expect(image.config.architecture == platform.architecture)
            #expect(image.index?.descriptor.digest == (try layout.image(named: "multi"))?.digest)
        }
        // Go's naming: aarch64 is arm64.
        #expect(try await source.resolve(platform: Platform(parsing: "linux/aarch64")).config.architecture == "arm64")
    }

    @Test func missingPlatformListsTheAvailableOnes() async throws {
        let directory = try ScratchDirectory()
        let (layout, _) = try multiPlatformLayout(directory, platforms: [amd64, arm64])
        await #expect(throws: OCIError.noMatchingPlatform(wanted: "linux/s390x", available: ["linux/amd64", "linux/arm64"])) {
            try await LayoutImageSource(store: layout, imageName: "multi").resolve(platform: Platform(os: "linux", architecture: "s390x"))
        }
    }

    @Test func variantMustMatchWhenAsked() async throws {
        let directory = try ScratchDirectory()
        let v6 = Platform(os: "linux", architecture: "arm", variant: "v6")
        let v7 = Platform(os: "linux", architecture: "arm", variant: "v7")
        let (layout, entries) = try multiPlatformLayout(directory, platforms: [v6, v7])
        let source = LayoutImageSource(store: layout, imageName: "multi")
        #expect(try await source.resolve(platform: v7).manifestDescriptor.digest == entries[1].digest)
        await #expect(throws: OCIError.noMatchingPlatform(wanted: "linux/arm/v8", available: ["linux/arm/v6", "linux/arm/v7"])) {
            try await source.resolve(platform: Platform(os: "linux", architecture: "arm", variant: "v8"))
        }
    }

    @Test func configThatDisagreesWithTheManifestIsRefused() async throws {
        let directory = try ScratchDirectory()
        let layout = try ContentStore(root: directory.path)
        let layer = try layout.writeBlob(Array("not really a tar".utf8), mediaType: MediaType.ociLayer)
        let config = try store(ImageConfig(platform: amd64, config: nil, diffIDs: []), mediaType: MediaType.ociConfig, in: layout)
        try layout.setImage(named: "bad", to: try store(Manifest(config: config, layers: [layer]), mediaType: MediaType.ociManifest, in: layout))
        await #expect {
            try await LayoutImageSource(store: layout, imageName: "bad").resolve(platform: amd64)
        } throws: { error in
            guard case OCIError.malformedDocument(_, let reason) = error else { return false }
            return reason.contains("0 diffIDs for 1 layers")
        }
    }
}

/// How a layer is compressed: its media type says, except that a blob labelled uncompressed is sniffed.
@Suite(.tags(.unit)) struct LayerCompressionTests {
    /// One layer of each compression, with its blob and diffID.
    func layers(_ directory: ScratchDirectory) throws -> (ContentStore, [LayerCompression: (Descriptor, Digest)]) {
        let layout = try ContentStore(root: directory.path)
        var found: [LayerCompression: (Descriptor, Digest)] = [:]
        for compression in LayerCompression.allCases {
            var builder = ImageBuilder(store: layout, compression: compression)
            try builder.addLayer([file("hello", "hello \(compression)\n")], comment: "")
            let layer = try #require(builder.layers.first)
            found[compression] = (layer.descriptor, layer.diffID)
        }
        return (layout, found)
    }

    func relabelled(_ descriptor: Descriptor, _ mediaType: String) -> Descriptor {
        Descriptor(mediaType: mediaType, digest: descriptor.digest, size: descriptor.size)
    }

    @Test func blobLabelledUncompressedIsSniffed() async throws {
        let directory = try ScratchDirectory()
        let (layout, built) = try layers(directory)
        let local = LayoutImageSource(store: layout, imageName: nil)
        for (compression, (descriptor, diffID)) in built {
            for mediaType in [MediaType.ociLayer, "application/vnd.docker.image.rootfs.diff.tar", "application/octet-stream"] {
                let layer = SourceLayer(descriptor: relabelled(descriptor, mediaType), diffID: diffID, source: local)
                #expect(layer.localFile != nil)
                #expect(try await LayerCompression.of(layer) == compression, "\(compression) labelled \(mediaType)")
            }
            // Without a local file the first bytes are read from the source.
            let remote = RemoteLikeSource(local)
            let layer = SourceLayer(descriptor: relabelled(descriptor, MediaType.ociLayer), diffID: diffID, source: remote)
            #expect(try await LayerCompression.of(layer) == compression)
            #expect(remote.ranges.value == 1)
        }
    }

    @Test func mediaTypeThatNamesACompressionWins() async throws {
        let directory = try ScratchDirectory()
        let (layout, built) = try layers(directory)
        let remote = RemoteLikeSource(LayoutImageSource(store: layout, imageName: nil))
        let (tar, diffID) = try #require(built[LayerCompression.none])
        for (mediaType, expected) in [
            (MediaType.ociLayerGzip, LayerCompression.gzip), (MediaType.dockerLayerGzip, .gzip), (MediaType.ociLayerZstd, .zstd),
        ] {
            let layer = SourceLayer(descriptor: relabelled(tar, mediaType), diffID: diffID, source: remote)
            #expect(try await LayerCompression.of(layer) == expected)
        }
        #expect(remote.ranges.value == 0)
    }

    @Test func emptyBlobIsUncompressed() async throws {
        let directory = try ScratchDirectory()
        let layout = try ContentStore(root: directory.path)
        let empty = try layout.writeBlob([], mediaType: MediaType.ociLayer)
        let layer = SourceLayer(descriptor: empty, diffID: empty.digest, source: LayoutImageSource(store: layout, imageName: nil))
        #expect(try await LayerCompression.of(layer) == LayerCompression.none)
    }
}

/// A destination that records what the destination store holds when the image gets its name.
final class RecordingDestination: ImageDestination, Sendable {
    struct AtTag: Sendable {
        var missingBlobs: [Digest]
        var namedBefore: Descriptor?
    }

    let inner: LayoutDestination
    private let written = Mutex<[Descriptor]>([])
    private let tagged = Mutex<AtTag?>(nil)

    init(_ inner: LayoutDestination) { self.inner = inner }

    var name: String { inner.name }
    var stateWhenTagged: AtTag? { tagged.withLock { $0 } }

    func putBlob(_ descriptor: Descriptor, from source: any ImageSource, progress: @escaping ProgressHandler) async throws -> Int64 {
        defer { written.withLock { $0.append(descriptor) } }
        return try await inner.putBlob(descriptor, from: source, progress: progress)
    }

    func putDocument(_ bytes: [UInt8], descriptor: Descriptor) async throws {
        try await inner.putDocument(bytes, descriptor: descriptor)
        written.withLock { $0.append(descriptor) }
    }

    func tag(_ descriptor: Descriptor, bytes: [UInt8]) async throws {
        let store = inner.store
        let manifest = try JSONDecoder().decode(Manifest.self, from: Data(bytes))
        let expected = manifest.layers + [manifest.config, descriptor]
        let missing = expected.filter { !store.hasBlob($0) }.map(\.digest)
        let namedBefore = try store.image(named: inner.imageName)
        tagged.withLock { $0 = AtTag(missingBlobs: missing, namedBefore: namedBefore) }
        try await inner.tag(descriptor, bytes: bytes)
    }

    func acquireWriteLease() async throws -> FileLock? { try await inner.acquireWriteLease() }
}

func file(_ name: String, _ text: String) -> (TarHeader, [UInt8]) {
    let contents = Array(text.utf8)
    return (TarHeader(name: name, type: .regular, mode: 0o644, size: Int64(contents.count)), contents)
}

/// sha256 of a file's bytes, nil when it cannot be read.
func fileDigest(_ path: String) -> Digest? {
    guard let data = FileManager.default.contents(atPath: path) else { return nil }
    return .sha256(of: [UInt8](data))
}
