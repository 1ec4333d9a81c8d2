import Foundation
import SnapshotsAPI
import Testing
import TestSupport

/// Debian's containerd uses a snapshots service served by grpc-swift-2 over a unix socket, through the generated
/// SnapshotsAPI, as a proxy snapshotter plugin. containerd keeps its own record of every snapshot (its metadata
/// database): ctr's `snapshots ls` and `info` list that record and ask the plugin's `Stat` for each entry, while the
/// plugin's `List` is called by containerd's garbage collector (and, in a lazy pull, to find the snapshot a
/// `Prepare` answered with AlreadyExists).
@Suite(.tags(.integration), .enabled(if: containerdAvailable, "needs containerd and ctr (Debian package containerd) and root"))
struct ContainerdProxySnapshotterTests {
    static let namespace = "slipway-test"

    /// Serves `service`, starts containerd with it as the proxy snapshotter "slipway" (and `configuration`), runs
    /// `body`, then stops both.
    private func withContainerd(
        using service: InMemorySnapshots, configuration: String = "", _ body: (Containerd) async throws -> Void
    ) async throws {
        let scratch = try ScratchDirectory()
        let socket = scratch.sub("snapshotter.sock")
        // containerd connects to its proxy plugins as it starts: the socket is bound first.
        try await withSnapshotsServer(service, at: socket) {
            let containerd = try await Containerd.start(
                scratch,
                configuration: """
                    [proxy_plugins.slipway]
                      type = "snapshot"
                      address = "\(socket)"
                    \(configuration)
                    """)
            try await withStopped(containerd, stop: { await $0.stop() }, body)
        }
    }

    @Test func containerdDrivesTheGeneratedServiceOverAUnixSocket() async throws {
        let service = InMemorySnapshots([seededSnapshot])
        // A garbage collection after every removal: the event that makes containerd call List.
        try await withContainerd(using: service, configuration: "[plugins.\"io.containerd.gc.v1.scheduler\"]\n  deletion_threshold = 1") {
            try await exercise($0, service)
        }
    }

    /// The lazy pull's path: a layer's Prepare answered with AlreadyExists makes containerd look for the committed
    /// snapshot with List, filtered by the layer's chain ID and parent, and record it under the chain ID.
    @Test(.enabled(if: containerdGoClientAvailable, "needs golang-go and golang-github-containerd-containerd-dev"))
    func aLayerThePluginHasIsFoundWithListAndSkipped() async throws {
        let scratch = try ScratchDirectory()
        let prepareWithReference = try await buildPrepareWithReference(scratch)
        let service = InMemorySnapshots([seededSnapshot])
        try await withContainerd(using: service) { containerd in
            let prepared = try await run(
                prepareWithReference, [containerd.socket, Self.namespace, "slipway", "extract-1 \(seededChainID)", seededChainID])
            #expect(prepared.stdout == "already exists\n", "\(prepared.output)")
            #expect(service.listFilters == [[#"labels."containerd.io/snapshot.ref"==\#(seededChainID),parent=="""#]])

            let listed = try await snapshots(containerd, ["ls"])
            try #require(listed.status == 0, "ctr snapshots ls: \(listed.stderr)")
            #expect(listed.stdout.split(separator: "\n").contains { $0.split(separator: " ") == [Substring(seededChainID), "Committed"] }, "\(listed.stdout)")
            let info = try await snapshots(containerd, ["info", seededChainID])
            try #require(info.status == 0, "ctr snapshots info: \(info.stderr)")
            let described = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any]
            #expect(described?["Kind"] as? String == "Committed")
            let labels = described?["Labels"] as? [String: String] ?? [:]
            #expect(seededSnapshot.labels.allSatisfy { labels[$0.key] == $0.value }, "\(labels)")
        }
    }

    private func snapshots(_ containerd: Containerd, _ arguments: [String]) async throws -> ProcessResult {
        try await containerd.ctr(["--namespace", Self.namespace, "snapshots", "--snapshotter", "slipway"] + arguments)
    }

    private func exercise(_ containerd: Containerd, _ service: InMemorySnapshots) async throws {
        // Prepare: ctr prints the mounts this server answered.
        let prepared = try await snapshots(containerd, ["prepare", "--mounts", "work"])
        try #require(prepared.status == 0, "ctr snapshots prepare: \(prepared.stderr)")
        let backendKey = try #require(service.keys.first { $0.hasSuffix("/work") }, "\(service.keys)")
        #expect(backendKey.hasPrefix("\(Self.namespace)/"), "containerd names a backend snapshot <namespace>/<sequence>/<key>")
        // containerd 1.6 forwards no containerd-namespace metadata on calls it makes for a client such as ctr (only a
        // context that containerd itself gave a namespace carries it: the CRI plugin's): a snapshotter must read the
        // namespace from the key.
        #expect(service.namespaces.isEmpty, "containerd-namespace metadata arrived: \(service.namespaces)")
        let mounts = try JSONSerialization.jsonObject(with: Data(prepared.stdout.utf8)) as? [[String: Any]]
        let expected = try #require(InMemorySnapshots.mounts(forKey: backendKey).first)
        #expect(mounts?.count == 1)
        #expect(mounts?.first?["Type"] as? String == expected.type)
        #expect(mounts?.first?["Source"] as? String == expected.source)
        #expect(mounts?.first?["Options"] as? [String] == expected.options)

        // ls and info: containerd's record of the snapshot, completed by this server's Stat (kind, labels).
        let listed = try await snapshots(containerd, ["ls"])
        try #require(listed.status == 0, "ctr snapshots ls: \(listed.stderr)")
        #expect(listed.stdout.split(separator: "\n").contains { $0.split(separator: " ") == ["work", "Active"] }, "\(listed.stdout)")
        let info = try await snapshots(containerd, ["info", "work"])
        try #require(info.status == 0, "ctr snapshots info: \(info.stderr)")
        let described = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any]
        #expect(described?["Kind"] as? String == "Active")
        #expect((described?["Labels"] as? [String: String])?[InMemorySnapshots.servedLabel.key] == InMemorySnapshots.servedLabel.value)

        // Stat's NotFound reaches ctr as its not-found error: for a key containerd knows but this server lost, and
        // ls leaves such a snapshot out (any other code fails the whole listing).
        let lost = try await snapshots(containerd, ["prepare", "lost"])
        try #require(lost.status == 0, "ctr snapshots prepare: \(lost.stderr)")
        let lostKey = try #require(service.keys.first { $0.hasSuffix("/lost") })
        service.forget(lostKey)
        let lostInfo = try await snapshots(containerd, ["info", "lost"])
        #expect(lostInfo.status != 0)
        #expect(lostInfo.stderr.contains("snapshot \(lostKey) does not exist: not found"), "\(lostInfo.stderr)")
        let listedWithoutLost = try await snapshots(containerd, ["ls"])
        #expect(listedWithoutLost.status == 0, "ctr snapshots ls: \(listedWithoutLost.stderr)")
        #expect(!listedWithoutLost.stdout.contains("lost"), "\(listedWithoutLost.stdout)")
        // A key containerd never saw is refused by containerd itself, with the same error.
        let unknown = try await snapshots(containerd, ["info", "never-prepared"])
        #expect(unknown.status != 0)
        #expect(unknown.stderr.contains("not found"), "\(unknown.stderr)")

        // Removing a snapshot starts a garbage collection, which reads this server's List (a stream) and removes
        // every snapshot containerd does not record: the removed one, and the seeded one it never heard of.
        let removed = try await snapshots(containerd, ["rm", "work"])
        try #require(removed.status == 0, "ctr snapshots rm: \(removed.stderr)")
        try await waitUntil("containerd's garbage collection removed two snapshots") { service.removed.count >= 2 }
        #expect(Set(service.removed) == [backendKey, seededSnapshot.name])
        #expect(service.keys.isEmpty)
    }
}
