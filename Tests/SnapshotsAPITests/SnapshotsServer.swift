import GRPCCore
import GRPCNIOTransportHTTP2Posix
import SnapshotsAPI

/// The chain ID of a layer `seededSnapshot` holds.
let seededChainID = "sha256:" + String(repeating: "5e", count: 32)

/// A committed snapshot of a layer, for a server to hold before any request.
let seededSnapshot: SnapshotInfo = .with {
    $0.name = "seeded"
    $0.kind = .committed
    $0.labels = [InMemorySnapshots.referenceLabel: seededChainID, "slipway.test/origin": "seeded"]
}

/// Serves `service` on a unix socket at `socket` while `body` runs, then shuts the server down.
func withSnapshotsServer<Result: Sendable>(
    _ service: InMemorySnapshots, at socket: String, _ body: () async throws -> Result
) async throws -> Result {
    let transport = HTTP2ServerTransport.Posix(address: .unixDomainSocket(path: socket), transportSecurity: .plaintext)
    return try await withGRPCServer(transport: transport, services: [service]) { server in
        // Returns once the socket is bound.
        _ = try await server.listeningAddress
        return try await body()
    }
}
