import ContentStore
import Foundation
import Images
import OCI
import Registry
import Slipway
import Testing
import TestSupport

/// Slipway against the real peers: docker-registry, skopeo and umoci must agree with what we write and read.
@Suite(.tags(.integration), .serialized) struct InteropTests {
    @Test func pulledAndUnpackedTreeMatchesUmoci() async throws {
        let scratch = try ScratchDirectory()
        let layout = try makeDemoLayout(scratch)
        try await RegistryProcess.withRegistry { registry in
            try await withSession(try makeSession()) { session in
                let reference = "\(registry.host)/demo:v1"
                try await push(layout, to: reference, session: session)
                let store = try ContentStore(root: scratch.sub("store"))
                let (transfer, unpacked) = try await Puller(session: session, store: store).pullAndUnpack(
                    try ImageLocation(parsing: reference), to: scratch.sub("rootfs"))
                #expect(unpacked.layers == 3)

                // skopeo reads our store as an OCI layout and sees the same manifest.
                let inspect = try await run("skopeo", ["inspect", "oci:\(store.root):\(reference)"])
                #expect(inspect.status == 0, "\(inspect.stderr)")
                #expect(inspect.stdout.contains(transfer.manifestDigest))

                // umoci unpacks the same image from our store; the trees must be identical.
                let umoci = try await run("umoci", ["unpack", "--image", "\(store.root):\(reference)", scratch.sub("bundle")])
                #expect(umoci.status == 0, "\(umoci.stderr)")
                let ours = try describeTree(scratch.sub("rootfs"))
                let theirs = try describeTree(scratch.sub("bundle/rootfs"))
                #expect(ours.count > 20)
                #expect(Set(ours.keys) == Set(theirs.keys))
                for (path, entry) in ours where theirs[path] != entry {
                    Issue.record("\(path): slipway \(entry) vs umoci \(theirs[path].map(\.description) ?? "missing")")
                }
                // Whiteouts and the opaque directory took effect; the xattr came through.
                #expect(ours["etc/motd"] == nil)
                #expect(ours["var/cache/demo/stale-1"] == nil)
                #expect(ours["var/cache/demo/fresh"] != nil)
                #expect(ours["usr/bin/hello"]?.links == 2)
                let fresh = try #require(ours["var/cache/demo/fresh"])
                if geteuid() == 0 { #expect(fresh.uid == 1000 && fresh.gid == 100) }
                #expect(ours["dev/demo.fifo"]?.type == "fifo")
                if geteuid() == 0 { #expect(ours["dev/null"]?.type.hasPrefix("char") == true) }
                #expect(ours["etc/os-release"]?.xattrs["user.slipway.origin"] == "64656d6f")
            }
        }
    }

    @Test func skopeoAndSlipwayReadEachOthersPushes() async throws {
        let scratch = try ScratchDirectory()
        let layout = try makeDemoLayout(scratch)
        try await RegistryProcess.withRegistry { registry in
            try await withSession(try makeSession()) { session in
                // Ours → skopeo.
                let ours = try await push(layout, to: "\(registry.host)/ours:v1", session: session)
                let inspected = try await run("skopeo", ["inspect", "--tls-verify=false", "docker://\(registry.host)/ours:v1"])
                #expect(inspected.status == 0, "\(inspected.stderr)")
                #expect(inspected.stdout.contains(ours.manifestDigest))
                let copied = try await run("skopeo", ["copy", "-q", "--src-tls-verify=false", "docker://\(registry.host)/ours:v1", "oci:\(scratch.sub("skopeo-layout")):x"])
                #expect(copied.status == 0, "\(copied.stderr)")

                // skopeo → ours, as a Docker schema 2 image (skopeo converts on request).
                let pushed = try await run("skopeo", [
                    "copy", "-q", "--format", "v2s2", "--dest-tls-verify=false", "oci:\(layout.root):demo", "docker://\(registry.host)/theirs:v1",
                ])
                #expect(pushed.status == 0, "\(pushed.stderr)")
                let store = try ContentStore(root: scratch.sub("store"))
                let (image, _) = try await Puller(session: session, store: store).pull(try ImageLocation(parsing: "\(registry.host)/theirs:v1"))
                #expect(image.manifestDescriptor.mediaType == MediaType.dockerManifest)
                #expect(image.manifest.layers.allSatisfy { $0.mediaType == MediaType.dockerLayerGzip })
                for layer in image.manifest.layers { #expect(store.hasBlob(layer)) }

                // Tags resolve with HEAD (free against Docker Hub's pull limit) and list with pagination.
                let client = session.client(for: registry.host)
                let head = try await client.resolve(repository: "ours", reference: "v1")
                #expect(head.digest.description == ours.manifestDigest)
                #expect(head.mediaType == MediaType.ociManifest)
                #expect(try await client.listTags(repository: "ours") == ["v1"])

                // A layout skopeo wrote is a source too.
                let fromLayout = LayoutImageSource(store: try ContentStore(root: scratch.sub("skopeo-layout")), imageName: "x")
                #expect(try await fromLayout.resolve().manifestDescriptor.digest.description == ours.manifestDigest)
            }
        }
    }

    @Test func copiesBetweenTwoRegistries() async throws {
        let scratch = try ScratchDirectory()
        let layout = try makeDemoLayout(scratch)
        try await RegistryProcess.withRegistry { first in
            try await RegistryProcess.withRegistry { second in
                let pushed = try await run(slipwayBinary, ["copy", "-q", "oci:\(layout.root):demo", "\(first.host)/app:v1"])
                #expect(pushed.status == 0, "\(pushed.stderr)")
                func staged() throws -> Set<String> {
                    Set(try FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory()).filter { $0.hasPrefix("slipway-copy-") })
                }
                let stagedBefore = try staged()
                let copied = try await run(slipwayBinary, ["copy", "--json", "\(first.host)/app:v1", "\(second.host)/mirror/app:v1"])
                #expect(copied.status == 0, "\(copied.stderr)")
                let report = try JSONDecoder().decode(TransferReport.self, from: Data(copied.stdout.utf8))
                #expect(report.bytesTransferred >= report.bytesTotal - 1024)
                let inspect = try await run("skopeo", ["inspect", "--tls-verify=false", "docker://\(second.host)/mirror/app:v1"])
                #expect(inspect.status == 0, "\(inspect.stderr)")
                #expect(inspect.stdout.contains(report.manifestDigest))
                // Nothing staged is left behind in the temporary directory.
                let leftovers = try staged().subtracting(stagedBefore)
                #expect(leftovers.isEmpty, "\(leftovers)")
            }
        }
    }

    @Test func chunkedUploadAndCrossRepositoryMount() async throws {
        let scratch = try ScratchDirectory()
        let layout = try makeDemoLayout(scratch)
        try await withRegistryAndProxy { registry, proxy in
            try await withSession(try makeSession()) { session in
                try await push(layout, to: "\(proxy.host)/chunked:v1", session: session, chunkSize: 1 << 20)
                // The 4 MiB layer went up in 1 MiB PATCHes.
                #expect(proxy.requests(matching: "/blobs/uploads/", method: "PATCH").count >= 4)
                let inspect = try await run("skopeo", ["inspect", "--tls-verify=false", "docker://\(registry.host)/chunked:v1"])
                #expect(inspect.status == 0, "\(inspect.stderr)")

                // Copy to another repository on the same registry: blobs are mounted, not uploaded again.
                proxy.clearLog()
                let source = RemoteImageSource(reference: try Reference(parsing: "\(proxy.host)/chunked:v1"), client: session.client(for: proxy.host))
                let destination = try session.destination(for: try ImageLocation(parsing: "\(proxy.host)/mounted:v1"))
                let image = try await source.resolve()
                let report = try await Copier().copy(image, from: source, to: destination)
                #expect(report.bytesTransferred < 4096)
                let mounts = proxy.requestLog.filter { $0.method == "POST" && ($0.query?.contains("mount=") ?? false) }
                #expect(mounts.count == image.manifest.layers.count)
                #expect(mounts.allSatisfy { $0.status == 201 })
                #expect(proxy.requests(matching: "/blobs/uploads/", method: "PATCH").isEmpty)
                // Only the config was read (by resolve); no layer crossed the wire.
                let layerDigests = Set(image.manifest.layers.map(\.digest.description))
                #expect(layerBlobGETs(proxy).filter { layerDigests.contains(String($0.path.split(separator: "/").last ?? "")) }.isEmpty)
            }
        }
    }
}
