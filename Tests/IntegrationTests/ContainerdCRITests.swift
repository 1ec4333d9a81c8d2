import CRIAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The kubelet's path: containerd's CRI plugin, driven over its gRPC socket as the kubelet drives it, with
/// `snapshotter = "slipway"` and snapshot annotations on. The pod's image is pulled lazily (only its TOCs move),
/// its container runs and logs, and the pod's teardown leaves the snapshotter's lazy mounts to containerd's
/// garbage collection.
@Suite(.tags(.integration, .slow), .enabled(if: containerdAvailable && fuseAvailable, "needs root, /dev/fuse and Debian's containerd"), .serialized)
struct ContainerdCRITests {
    /// The CRI plugin's settings for a node whose images come from `registryHost` over plain HTTP (a hosts.toml
    /// per registry, as K3s writes from registries.yaml), snapshots from Slipway.
    static func criConfiguration(socket: String, registryHost: String, sandboxImage: String, scratch: ScratchDirectory) throws -> String {
        let hosts = scratch.sub("certs.d/\(registryHost)")
        try FileManager.default.createDirectory(atPath: hosts, withIntermediateDirectories: true)
        try write(
            """
            server = "http://\(registryHost)"
            [host."http://\(registryHost)"]
              capabilities = ["pull", "resolve"]
            """, to: "\(hosts)/hosts.toml")
        for directory in ["cni-bin", "cni-conf"] { try FileManager.default.createDirectory(atPath: scratch.sub(directory), withIntermediateDirectories: true) }
        return """
            [proxy_plugins.slipway]
              type = "snapshot"
              address = "\(socket)"
            [plugins."io.containerd.grpc.v1.cri"]
              sandbox_image = "\(sandboxImage)"
              stream_server_address = "127.0.0.1"
              stream_server_port = "0"
              # The kubelet's sandbox asks for an OOM score of -998; where lowering a score is not allowed (a
              # container or a user namespace) that fails every pod, so no score below containerd's own.
              restrict_oom_score_adj = true
              [plugins."io.containerd.grpc.v1.cri".containerd]
                snapshotter = "slipway"
                disable_snapshot_annotations = false
              [plugins."io.containerd.grpc.v1.cri".cni]
                bin_dir = "\(scratch.sub("cni-bin"))"
                conf_dir = "\(scratch.sub("cni-conf"))"
              [plugins."io.containerd.grpc.v1.cri".registry]
                config_path = "\(scratch.sub("certs.d"))"
            """
    }

    @Test func aPodsImageIsPulledLazilyAndItsContainerRunsAndLogs() async throws {
        let scratch = try ScratchDirectory()
        try await withRegistryAndProxy { registry, proxy in
            let reference = try await ContainerdSnapshotterTests.publishToolsAsEStargz(registry, proxy: proxy, scratch)
            // The pod's sandbox ("pause") image: busybox sleeping, an ordinary image, so its snapshots are extracted.
            let pause = scratch.sub("pause-layout")
            try await runChecked(
                slipwayBinary, ["assemble", "-q", "oci:\(pause):pause", "--layer", scratch.sub("base.tar"), "--entrypoint", "/bin/sleep", "2147483647"])
            try await runChecked(slipwayBinary, ["copy", "-q", "oci:\(pause):pause", "\(registry.host)/pause:1"])

            let layers = try await layerDescriptors(reference)
            let readBefore = layerBlobGETs(proxy).count
            func layerReads() -> [LoggedRequest] {
                layerBlobGETs(proxy).dropFirst(readBefore).filter { request in layers.contains { request.uri.contains($0.digest) } }
            }
            let store = scratch.sub("store")
            let snapshotter = try await ContainerdSnapshotterTests.SnapshotterProcess.start(scratch, store: store, options: ["--prefetch", "none"])
            defer { _ = snapshotter.process.signal(SIGKILL) }
            let configuration = try Self.criConfiguration(
                socket: snapshotter.socket, registryHost: proxy.host, sandboxImage: "\(proxy.host)/pause:1", scratch: scratch)
            try await withStopped(try await Containerd.start(scratch, configuration: configuration, cri: true), stop: { await $0.stop() }) { containerd in
                let transport = try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: containerd.socket), transportSecurity: .plaintext)
                try await withGRPCClient(transport: transport) { client in
                    let images = Runtime_V1_ImageService.Client(wrapping: client)
                    let runtime = Runtime_V1_RuntimeService.Client(wrapping: client)

                    // PullImage, as the kubelet asks before it creates a pod's container.
                    let pulled = try await images.pullImage(.with { $0.image.image = reference })
                    #expect(pulled.imageRef.hasPrefix("sha256:"))
                    #expect(!layerReads().isEmpty && layerReads().allSatisfy { $0.range != nil }, "only ranges of the layers: \(layerReads())")
                    let pulledBytes = layerReads().reduce(0) { $0 + $1.responseBodyBytes }
                    let layerBytes = layers.reduce(0) { $0 + $1.size }
                    #expect(pulledBytes < layerBytes / 4, "the pull moved \(pulledBytes) of the layers' \(layerBytes) bytes")
                    #expect(try FileManager.default.contentsOfDirectory(atPath: "\(store)/snapshotter/lazy").count == 2)

                    // A pod on the node's network (no CNI needed), and a container that prints a probe of the image.
                    let logs = scratch.sub("pod-logs")
                    try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
                    let sandboxConfig = Runtime_V1_PodSandboxConfig.with {
                        $0.metadata = .with {
                            $0.name = "etl"
                            $0.uid = UUID().uuidString
                            $0.namespace = "default"
                        }
                        $0.logDirectory = logs
                        $0.linux.securityContext.namespaceOptions.network = .node
                    }
                    let pod = try await runtime.runPodSandbox(.with { $0.config = sandboxConfig }).podSandboxID
                    let container = try await runtime.createContainer(.with {
                        $0.podSandboxID = pod
                        $0.sandboxConfig = sandboxConfig
                        $0.config = .with {
                            $0.metadata.name = "probe"
                            $0.image.image = reference
                            $0.command = ["sh", "-c", ContainerdSnapshotterTests.probe]
                            $0.logPath = "probe.log"
                        }
                    }).containerID
                    _ = try await runtime.startContainer(.with { $0.containerID = container })
                    var status = Runtime_V1_ContainerStatus()
                    try await waitUntil("the probe container exits") {
                        status = try await runtime.containerStatus(.with { $0.containerID = container }).status
                        return status.state == .containerExited
                    }
                    #expect(status.exitCode == 0, "\(status.reason) \(status.message)")
                    // CRI log lines: "TIME STREAM TAG MESSAGE".
                    let log = try String(contentsOfFile: "\(logs)/probe.log", encoding: .utf8)
                    let printed = log.split(separator: "\n").map { $0.split(separator: " ", maxSplits: 3).last.map(String.init) ?? "" }
                    #expect(printed.joined(separator: "\n") + "\n" == ContainerdSnapshotterTests.probeOutput, "\(log)")
                    #expect(layerReads().allSatisfy { $0.range != nil }, "the container read ranges, never a whole layer")

                    // The kubelet's teardown, then the image: containerd's collection removes the snapshots and with
                    // them the lazy mounts.
                    _ = try await runtime.removeContainer(.with { $0.containerID = container })
                    _ = try await runtime.stopPodSandbox(.with { $0.podSandboxID = pod })
                    _ = try await runtime.removePodSandbox(.with { $0.podSandboxID = pod })
                    _ = try await images.removeImage(.with { $0.image.image = reference })
                    try await waitUntil("the lazy mounts are gone") {
                        (try? FileManager.default.contentsOfDirectory(atPath: "\(store)/snapshotter/lazy"))?.isEmpty ?? true
                    }
                }
            }
            #expect(await snapshotter.stop() == 0)
        }
    }
}
