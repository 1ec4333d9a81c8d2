import GRPCCore
import GRPCNIOTransportHTTP2Posix
import SnapshotsAPI
import Testing
import TestSupport

/// The generated client and server stubs talk over a unix socket: metadata, a server stream and status codes.
@Suite(.tags(.integration))
struct GeneratedClientTests {
    @Test func theClientReachesTheServerWithMetadataAStreamAndStatusCodes() async throws {
        let scratch = try ScratchDirectory()
        let service = InMemorySnapshots([seededSnapshot])
        let socket = scratch.sub("snapshotter.sock")
        try await withSnapshotsServer(service, at: socket) {
            let transport = try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: socket), transportSecurity: .plaintext)
            try await withGRPCClient(transport: transport) { client in
                let snapshots = Snapshots.Client(wrapping: client)
                let stat = try await snapshots.stat(.with { $0.key = seededSnapshot.name }, metadata: ["containerd-namespace": "slipway-test"])
                #expect(stat.info == seededSnapshot)
                #expect(service.namespaces == ["slipway-test"])

                let listed = try await snapshots.list(Containerd_Services_Snapshots_V1_ListSnapshotsRequest()) { response in
                    var infos: [SnapshotInfo] = []
                    for try await message in response.messages { infos += message.info }
                    return infos
                }
                #expect(listed == [seededSnapshot])

                let missing = await #expect(throws: RPCError.self) { try await snapshots.stat(.with { $0.key = "missing" }) }
                #expect(missing?.code == .notFound)
                let twice = await #expect(throws: RPCError.self) {
                    try await snapshots.prepare(.with { $0.key = seededSnapshot.name })
                }
                #expect(twice?.code == .alreadyExists)
            }
        }
    }
}
