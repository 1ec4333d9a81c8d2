import Archive
import ContentStore
import EStargz
import Foundation
import OCI
import Slipway
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// An eStargz layer built by hand, so its TOC can carry numbers no writer produces. Each file is a gzip member with
/// its tar header, then one with its contents; then `beforeTOC` bytes, the TOC member, `afterTOC` bytes and a footer
/// pointing at the TOC. The layer's `toc.digest` annotation is the TOC's real digest: the registry and the digest
/// checks let it through, and only the reader's own validation stands between it and the mount.
struct HandMadeEStargzLayer: Sendable {
    var files: [(name: String, contents: [UInt8])]
    var tamper: @Sendable (inout [TOCEntry]) -> Void = { _ in }
    var beforeTOC = 0
    var afterTOC = 0

    func blob() throws -> (bytes: [UInt8], tocDigest: Digest) {
        var blob: [UInt8] = []
        var entries: [TOCEntry] = []
        for (name, contents) in files {
            var tar = TarWriter()
            try tar.write(TarHeader(name: name, type: .regular, size: Int64(contents.count)), contents: contents)
            blob += try gzip(data: Array(tar.bytes[0..<512]))
            var entry = TOCEntry(name: name, type: "reg")
            entry.size = Int64(contents.count)
            entry.mode = 0o644
            entry.offset = Int64(blob.count)
            entry.digest = Digest.sha256(of: contents).description
            entry.chunkDigest = entry.digest
            blob += try gzip(data: Array(tar.bytes[512...]))
            entries.append(entry)
        }
        tamper(&entries)
        let json = TOC(entries: entries).jsonBytes()
        var tar = TarWriter()
        try tar.write(TarHeader(name: estargzTOCName, type: .regular, size: Int64(json.count)), contents: json)
        try tar.finish()
        blob += [UInt8](repeating: 0, count: beforeTOC)
        let tocOffset = Int64(blob.count)
        blob += try gzip(data: tar.bytes)
        blob += [UInt8](repeating: 0, count: afterTOC)
        blob += estargzFooter(tocOffset: tocOffset)
        return (blob, Digest.sha256(of: json))
    }

    /// Writes a one-layer image with this layer into an OCI layout and copies it to `reference`; returns the
    /// layer's digest.
    func publish(to reference: String, _ scratch: ScratchDirectory, name: String) async throws -> Digest {
        let (bytes, tocDigest) = try blob()
        let layout = try ContentStore(root: scratch.sub("layout-\(name)"))
        var layer = try layout.writeBlob(bytes, mediaType: MediaType.ociLayerGzip)
        layer.annotations = [tocDigestAnnotation: tocDigest.description]
        // Not the digest of an uncompressed tar (there is none to take): nothing on the lazy path reads it.
        let config = ImageConfig(platform: .host, config: nil, diffIDs: [Digest.sha256(of: bytes)])
        let configDescriptor = try layout.writeBlob(Array(try JSONEncoder.canonical.encode(config)), mediaType: MediaType.ociConfig)
        let manifest = Manifest(config: configDescriptor, layers: [layer])
        let manifestDescriptor = try layout.writeBlob(Array(try JSONEncoder.canonical.encode(manifest)), mediaType: MediaType.ociManifest)
        try layout.setImage(named: name, to: manifestDescriptor)
        let copied = try await run(slipwayBinary, ["copy", "-q", "oci:\(layout.root):\(name)", reference])
        try #require(copied.status == 0, "copy: \(copied.stderr)")
        return layer.digest
    }
}

extension LazyMountTests {
    static let goodFile = (name: "etc/good.txt", contents: Array("served whatever the other files say\n".utf8))
    static let badFile = (name: "opt/bad.bin", contents: [UInt8](repeating: 0x5a, count: 3000))

    /// A layer whose TOC carries numbers a lazy mount cannot serve is refused when the mount opens it: `slipway
    /// mount` and `slipway inspect` exit 1 naming the layer and the problem, before anything is allocated for it.
    /// (Refused rather than served with EIO on the file: the TOC is the layer's contract, authenticated by the
    /// manifest; one that breaks it is corrupt or hostile as a whole, as the reader already decides for offsets
    /// outside the blob or `..` names.)
    @Test(arguments: [
        // A file of nearly Int64.max bytes behind one 3000-byte chunk (statfs added such sizes up and trapped).
        ("huge-size", HandMadeEStargzLayer(files: [goodFile, badFile]) { $0[1].size = Int64.max - 1; $0[1].chunkSize = 3000 },
         "\"opt/bad.bin\": its chunks cover 3000 of its \(Int64.max - 1) bytes"),
        // The last chunk's compressed range runs to a TOC 66 MiB further on: one read would fetch it all.
        ("wide-chunk", HandMadeEStargzLayer(files: [goodFile, badFile], beforeTOC: Int(EStargzReader.maxChunkCompressedSpan)),
         "compressed bytes, above the \(EStargzReader.maxChunkCompressedSpan)-byte limit of one chunk's compressed range"),
        // The footer's TOC offset leaves 64 MiB to the footer: the TOC would be read whole before it is inflated.
        ("wide-toc", HandMadeEStargzLayer(files: [goodFile, badFile], afterTOC: Int(EStargzReader.maxCompressedTOCSize)),
         "bytes compressed, above the \(EStargzReader.maxCompressedTOCSize)-byte limit"),
    ])
    func aLayerWithHostileTOCNumbersIsRefusedNamingIt(_ name: String, _ layer: HandMadeEStargzLayer, _ problem: String) async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let reference = "\(registry.host)/hostile:\(name)"
            let digest = try await layer.publish(to: reference, scratch, name: name)
            let directory = scratch.sub("mnt")
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let mounted = try await run(slipwayBinary, ["mount", "-q", "--store", scratch.sub("store"), "--prefetch", "none", reference, directory])
            if mounted.status == 0 {
                // Still served: show what statfs does, then clean up.
                _ = try await run("/usr/bin/stat", ["-f", directory])
                _ = try await run(slipwayBinary, ["umount", "--store", scratch.sub("store"), directory])
            }
            #expect(mounted.status == 1, "mount: \(mounted.stderr)")
            #expect(mounted.stderr.contains("layer \(digest)"), "\(mounted.stderr)")
            #expect(mounted.stderr.contains(problem), "\(mounted.stderr)")
            #expect(!mounted.stderr.contains("Fatal error"), "\(mounted.stderr)")
            let inspected = try await run(slipwayBinary, ["inspect", reference])
            #expect(inspected.status == 1, "inspect: \(inspected.stdout)")
            #expect(inspected.stderr.contains("layer \(digest)") && inspected.stderr.contains(problem), "\(inspected.stderr)")
        }
    }

    /// Symlinks in a lazy mount have mode 0777 whatever their tar header says, as the kernel gives extracted links.
    @Test func symlinksInTheMountHaveMode0777LikeUnpack() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let layout = try ContentStore(root: scratch.sub("layout"))
            var builder = ImageBuilder(store: layout)
            try builder.addLayer(
                [
                    (TarHeader(name: "etc/", type: .directory, mode: 0o755), []),
                    (TarHeader(name: "etc/hosts", type: .regular, mode: 0o644, size: 10), Array("127.0.0.1\n".utf8)),
                    // Header modes as some builders write them.
                    (TarHeader(name: "etc/hosts-link", type: .symbolicLink, mode: 0o644, linkName: "hosts"), []),
                    (TarHeader(name: "etc/absolute-link", type: .symbolicLink, mode: 0o755, linkName: "/etc/hosts"), []),
                ], comment: "symlinks with header modes other than 0777")
            try builder.commit(name: "links", config: ImageConfig.ContainerConfig(), platform: .host)
            let plain = "\(registry.host)/links:v1"
            let lazy = "\(registry.host)/links:v1-esgz"
            #expect(try await run(slipwayBinary, ["copy", "-q", "oci:\(layout.root):links", plain]).status == 0)
            let converted = try await run(slipwayBinary, ["convert", "-q", "--store", scratch.sub("convert-store"), plain, lazy])
            try #require(converted.status == 0, "convert: \(converted.stderr)")
            #expect(try await run(slipwayBinary, ["unpack", "-q", "--store", scratch.sub("unpack-store"), plain, scratch.sub("rootfs")]).status == 0)
            let mounted = try await mount(lazy, scratch, name: "links", store: scratch.sub("store"), options: ["--prefetch", "none"])
            // The unmount at the end is the real one; this only cleans up after a failed expectation.
            defer { detachMount(mounted.directory) }
            await #expect(try mounted.status().lazyLayers == 1)
            for link in ["etc/hosts-link", "etc/absolute-link"] {
                var unpacked = stat(), served = stat()
                try #require(lstat(scratch.sub("rootfs/\(link)"), &unpacked) == 0)
                try #require(lstat("\(mounted.directory)/\(link)", &served) == 0)
                #expect(unpacked.st_mode == S_IFLNK | 0o777, "\(link) unpacked: \(String(unpacked.st_mode, radix: 8))")
                #expect(served.st_mode == unpacked.st_mode, "\(link) mounted: \(String(served.st_mode, radix: 8))")
            }
            #expect(FileManager.default.contents(atPath: "\(mounted.directory)/etc/hosts-link") == Data("127.0.0.1\n".utf8))
            try await mounted.unmount()
        }
    }
}
