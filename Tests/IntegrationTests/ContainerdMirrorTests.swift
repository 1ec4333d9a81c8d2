import Foundation
import OCI
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// containerd pulls through `slipway serve` configured as a registry mirror in a hosts.toml, the way a
/// Kubernetes node is set up (containerd adds `?ns=` naming the registry it meant).
@Suite(.tags(.integration), .enabled(if: containerdAvailable, "needs containerd (Debian package) and root"))
struct ContainerdMirrorTests {
    @Test func ctrPullsThroughTheCacheAsAMirror() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let layout = try makeDemoLayout(scratch)
            try await withSession(try makeSession()) { session in _ = try await push(layout, to: "\(proxy.host)/demo:v1", session: session) }
            let manifest = try #require(try layout.image(named: "demo"))
            try await withCache(upstream: proxy.url.absoluteString, root: scratch.sub("cache")) { cache in
                let hosts = scratch.sub("certs.d/\(proxy.host)")
                try FileManager.default.createDirectory(atPath: hosts, withIntermediateDirectories: true)
                try """
                    server = "http://\(proxy.host)"

                    [host."http://\(cache.host)"]
                      capabilities = ["pull", "resolve"]
                    """.write(toFile: "\(hosts)/hosts.toml", atomically: true, encoding: .utf8)
                let containerd = try await Containerd.start(scratch)
                // Stopped (and awaited) at the end; this only covers a failed expectation.
                defer { containerd.process.signal(SIGTERM) }
                proxy.clearLog()
                let pulled = try await containerd.ctr(["-n", "slipway-test", "image", "pull", "--hosts-dir", scratch.sub("certs.d"), "\(proxy.host)/demo:v1"])
                #expect(pulled.status == 0, "ctr pull: \(pulled.stderr)")
                let listed = try await containerd.ctr(["-n", "slipway-test", "image", "ls", "-q"])
                #expect(listed.stdout.contains("\(proxy.host)/demo:v1"))
                let images = try await containerd.ctr(["-n", "slipway-test", "image", "ls"])
                #expect(images.stdout.contains(manifest.digest.description))

                // containerd asked the mirror, naming the registry it meant; the upstream saw only the cache's requests.
                let log = try cache.accessLog()
                let namespace = "ns=" + (proxy.host.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(.init(charactersIn: "."))) ?? "")
                let viaMirror = log.filter { ($0["path"] as? String)?.contains(namespace) == true }
                #expect(viaMirror.contains { ($0["path"] as? String)?.contains("/manifests/") == true })
                #expect(viaMirror.filter { ($0["path"] as? String)?.contains("/blobs/") == true }.count >= 3)
                #expect(viaMirror.allSatisfy { $0["status"] as? Int == 200 })
                // Each blob crossed the upstream link once, fetched by the cache; containerd did not fall back.
                let upstreamGETs = Dictionary(grouping: proxy.requests(matching: "/blobs/sha256:", method: "GET"), by: \.path)
                #expect(!upstreamGETs.isEmpty && upstreamGETs.values.allSatisfy { $0.count == 1 }, "\(upstreamGETs.mapValues(\.count))")
                await containerd.stop()
            }
        }
    }
}
