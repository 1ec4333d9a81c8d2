import Archive
import ContentStore
import Foundation
import Images
import OCI
import Slipway
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Disk fill and interruption through the real `slipway` binary: a decompression bomb layer is refused with the
/// layer named and nothing left behind, SIGTERM/SIGINT remove what an unpack had half built, and PAX mtimes at
/// the ends of Int64 convert without a trap.
@Suite(.tags(.integration)) struct LayerLimitTests {
    /// Feeds a tar of one `zeros`-byte file of zeros to `ImageBuilder` through a FIFO, so no tar lands on disk.
    func addZeroFileLayer(_ builder: inout ImageBuilder, zeros: Int64, scratch: ScratchDirectory) throws {
        let fifo = scratch.sub("tar-\(UUID().uuidString).fifo")
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        let writer = Thread {
            guard let handle = FileHandle(forWritingAtPath: fifo) else { return }
            defer { try? handle.close() }
            var tar = TarWriter { try handle.write(contentsOf: $0) }
            let piece = [UInt8](repeating: 0, count: 1 << 20)
            try? tar.writeHeader(TarHeader(name: "zeros", type: .regular, mode: 0o644, size: zeros))
            var left = zeros
            while left > 0 {
                let n = Int(min(left, Int64(piece.count)))
                try? tar.writeContents(Array(piece[0..<n]))
                left -= Int64(n)
            }
            try? tar.finish()
        }
        writer.start()
        try builder.addLayer(tarFile: fifo, comment: "zeros")
    }

    func entries(_ directory: String) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    }

    @Test(arguments: [LayerCompression.gzip, .zstd])
    func aDecompressionBombIsRefusedAndLeavesNothing(compression: LayerCompression) async throws {
        let scratch = try ScratchDirectory()
        let layout = try ContentStore(root: scratch.sub("layout"))
        var builder = ImageBuilder(store: layout, compression: compression)
        try addZeroFileLayer(&builder, zeros: 256 << 20, scratch: scratch)
        try builder.commit(name: "demo", config: .init())
        let image = try await LayoutImageSource(store: layout, imageName: "demo").resolve()
        let bomb = try #require(image.manifest.layers.first)
        #expect(bomb.size < 1 << 20, "the bomb layer is \(bomb.size) bytes")

        try await RegistryProcess.withRegistry { registry in
            _ = try await withSession(try makeSession()) { session in try await push(layout, to: "\(registry.host)/bomb:v1", session: session) }
            let reference = "\(registry.host)/bomb:v1"

            let unpacked = try await run(slipwayBinary, [
                "unpack", "-q", "--store", scratch.sub("store"), "--max-layer-size", "16M", reference, scratch.sub("out/rootfs"),
            ])
            #expect(unpacked.status == 1, "\(unpacked.stderr)")
            #expect(unpacked.stderr.contains("layer \(bomb.digest) decompresses to more than 16777216 bytes"), "\(unpacked.stderr)")
            #expect(unpacked.stderr.contains("--max-layer-size"))
            #expect(entries(scratch.sub("out")).isEmpty, "left behind: \(entries(scratch.sub("out")))")

            // The environment sets the same limit for the layer cache.
            let cached = try await run("/usr/bin/env", [
                "SLIPWAY_MAX_LAYER_SIZE=16M", slipwayBinary, "pull", "-q", "--unpack-layers", "--store", scratch.sub("cache-store"), reference,
            ])
            #expect(cached.status == 1, "\(cached.stderr)")
            #expect(cached.stderr.contains("layer \(bomb.digest) decompresses to more than 16777216 bytes"), "\(cached.stderr)")
            #expect(entries(scratch.sub("cache-store/ingest")).filter { $0.hasPrefix("layer-") && !$0.hasSuffix(".lock") }.isEmpty,
                    "left behind: \(entries(scratch.sub("cache-store/ingest")))")
            #expect(entries(scratch.sub("cache-store/layers/sha256")).isEmpty)
        }
    }

    /// A two-layer image whose second layer downloads slowly: the first is extracted into the staging tree while
    /// the second still arrives, and a signal then must remove that tree.
    @Test(arguments: [SIGTERM, SIGINT])
    func aSignalDuringUnpackRemovesTheStagingTree(signal: Int32) async throws {
        let scratch = try ScratchDirectory()
        let layout = try ContentStore(root: scratch.sub("layout"))
        var builder = ImageBuilder(store: layout)
        try builder.addLayer([(TarHeader(name: "first/ready", type: .regular, mode: 0o644, size: 5), Array("ready".utf8))], comment: "first")
        // Incompressible, so the throttled blob takes about a minute.
        let noise = (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255) }
        try builder.addLayer([(TarHeader(name: "second/noise", type: .regular, mode: 0o644, size: Int64(noise.count)), noise)], comment: "second")
        try builder.commit(name: "demo", config: .init())
        let image = try await LayoutImageSource(store: layout, imageName: "demo").resolve()
        let slow = image.manifest.layers[1]
        #expect(slow.size > 1 << 19)

        try await withRegistryAndProxy { registry, proxy in
            _ = try await withSession(try makeSession()) { session in try await push(layout, to: "\(registry.host)/demo:v1", session: session) }
            proxy.inject(.throttle(bytesPerSecond: 16 << 10), path: "/blobs/\(slow.digest)", times: .max)
            let staging = scratch.sub("out/.rootfs.slipway-partial")
            let process = try ChildProcess(
                slipwayBinary, ["unpack", "-q", "--store", scratch.sub("store"), "\(proxy.host)/demo:v1", scratch.sub("out/rootfs")])

            // The event: the first layer is in the staging tree (the second takes a minute to arrive).
            var started = false
            for _ in 0..<6000 where !started && process.endedStatus == nil {
                try await Task.sleep(for: .milliseconds(10))
                started = FileManager.default.fileExists(atPath: staging + "/first/ready")
            }
            try #require(started, "the unpack never started extracting: \(process.standardErrorSoFar)")
            process.signal(signal)
            #expect(await process.termination() == .exit(128 + signal), "killed by the signal instead of handling it")
            #expect(entries(scratch.sub("out")).isEmpty, "left behind: \(entries(scratch.sub("out")))")
            let stderr = process.standardErrorSoFar
            #expect(stderr.contains("partial output removed"), "\(stderr)")
        }
    }

    @Test func convertingPAXMtimesAtTheEndsOfInt64DoesNotTrap() async throws {
        let scratch = try ScratchDirectory()
        let layout = try ContentStore(root: scratch.sub("layout"))
        var builder = ImageBuilder(store: layout)
        try builder.addLayer([
            (TarHeader(name: "latest", type: .regular, mode: 0o644, size: 1, mtime: TarTimestamp(seconds: .max)), Array("x".utf8)),
            (TarHeader(name: "earliest", type: .regular, mode: 0o644, size: 1, mtime: TarTimestamp(seconds: .min)), Array("y".utf8)),
        ], comment: "extreme mtimes")
        try builder.commit(name: "demo", config: .init())

        let converted = try await run(slipwayBinary, ["convert", "-q", "oci:\(layout.root):demo", "oci:\(scratch.sub("estargz")):demo"])
        #expect(converted.status == 0 || converted.status == 1, "exit \(converted.status): \(converted.stderr)")
        #expect(!converted.stderr.contains("Fatal error"), "\(converted.stderr)")
    }
}
