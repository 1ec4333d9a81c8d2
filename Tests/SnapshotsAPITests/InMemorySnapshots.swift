import Foundation
import GRPCCore
import SnapshotsAPI
import SwiftProtobuf
import Synchronization

typealias Snapshots = Containerd_Services_Snapshots_V1_Snapshots
typealias SnapshotInfo = Containerd_Services_Snapshots_V1_Info

/// Just enough of a snapshotter to see what containerd asks over the generated API and whether it understands the
/// answers: snapshots live in a dictionary, nothing is mounted, and each request's containerd namespace is noted.
/// It implements `ServiceProtocol` rather than `SimpleServiceProtocol` because only the former hands a method its
/// request's metadata, where the namespace travels.
final class InMemorySnapshots: Snapshots.ServiceProtocol {
    /// What `Prepare` answers: a mount that is never mounted, recognisable in ctr's output.
    static func mounts(forKey key: String) -> [Containerd_Types_Mount] {
        [.with {
            $0.type = "bind"
            $0.source = "/nonexistent/slipway-test/\(key)"
            $0.options = ["rbind", "ro"]
        }]
    }

    /// Added by `Prepare` to the labels containerd sent, so that an answer from this server is told from
    /// containerd's own metadata.
    static let servedLabel = (key: "slipway.test/served-by", value: "InMemorySnapshots")

    /// The label containerd's unpacker puts on the `Prepare` of a layer, naming the snapshot (its chain ID) the
    /// layer would become.
    static let referenceLabel = "containerd.io/snapshot.ref"

    private struct State {
        var snapshots: [String: SnapshotInfo]
        var namespaces: Set<String> = []
        var removed: [String] = []
        var listFilters: [[String]] = []
    }

    private let state: Mutex<State>

    init(_ snapshots: [SnapshotInfo] = []) {
        state = Mutex(State(snapshots: Dictionary(uniqueKeysWithValues: snapshots.map { ($0.name, $0) })))
    }

    /// The values of `containerd-namespace` in the requests so far.
    var namespaces: Set<String> { state.withLock { $0.namespaces } }

    /// The keys `Remove` removed, in order.
    var removed: [String] { state.withLock { $0.removed } }

    /// The filters of each `List` so far.
    var listFilters: [[String]] { state.withLock { $0.listFilters } }

    /// The backend keys (`<namespace>/<sequence>/<key>`) of the snapshots this server holds.
    var keys: Set<String> { state.withLock { Set($0.snapshots.keys) } }

    /// Drops a snapshot without containerd's knowledge, as a snapshotter that lost its state would.
    func forget(_ key: String) {
        _ = state.withLock { $0.snapshots.removeValue(forKey: key) }
    }

    private func note(_ metadata: Metadata) {
        state.withLock { state in
            for namespace in metadata[stringValues: "containerd-namespace"] { state.namespaces.insert(namespace) }
        }
    }

    private static func notFound(_ key: String) -> RPCError {
        RPCError(code: .notFound, message: "snapshot \(key) does not exist")
    }

    private static func unneeded(_ method: String) -> RPCError {
        RPCError(code: .unimplemented, message: "\(method) is not part of InMemorySnapshots")
    }

    func prepare(
        request: ServerRequest<Containerd_Services_Snapshots_V1_PrepareSnapshotRequest>, context: ServerContext
    ) async throws -> ServerResponse<Containerd_Services_Snapshots_V1_PrepareSnapshotResponse> {
        note(request.metadata)
        let prepared = request.message
        let now = Google_Protobuf_Timestamp(date: Date())
        try state.withLock { state in
            guard state.snapshots[prepared.key] == nil else {
                throw RPCError(code: .alreadyExists, message: "snapshot \(prepared.key) already exists")
            }
            // What a remote snapshotter answers for a layer it already has: containerd then finds the committed
            // snapshot with List and skips the layer.
            if let reference = prepared.labels[Self.referenceLabel], state.snapshots.values.contains(where: {
                $0.kind == .committed && $0.labels[Self.referenceLabel] == reference && $0.parent == prepared.parent
            }) {
                throw RPCError(code: .alreadyExists, message: "target snapshot \(reference) already exists")
            }
            state.snapshots[prepared.key] = .with {
                $0.name = prepared.key
                $0.parent = prepared.parent
                $0.kind = .active
                $0.labels = prepared.labels.merging([Self.servedLabel]) { $1 }
                $0.createdAt = now
                $0.updatedAt = now
            }
        }
        return ServerResponse(message: .with { $0.mounts = Self.mounts(forKey: prepared.key) })
    }

    func stat(
        request: ServerRequest<Containerd_Services_Snapshots_V1_StatSnapshotRequest>, context: ServerContext
    ) async throws -> ServerResponse<Containerd_Services_Snapshots_V1_StatSnapshotResponse> {
        note(request.metadata)
        let key = request.message.key
        guard let info = state.withLock({ $0.snapshots[key] }) else { throw Self.notFound(key) }
        return ServerResponse(message: .with { $0.info = info })
    }

    /// Every snapshot, one per message. Filters are noted but not applied: containerd checks the snapshots it gets
    /// against the filter it sent.
    func list(
        request: ServerRequest<Containerd_Services_Snapshots_V1_ListSnapshotsRequest>, context: ServerContext
    ) async throws -> StreamingServerResponse<Containerd_Services_Snapshots_V1_ListSnapshotsResponse> {
        note(request.metadata)
        let snapshots = state.withLock { state in
            state.listFilters.append(request.message.filters)
            return Array(state.snapshots.values)
        }
        return StreamingServerResponse { writer in
            for info in snapshots { try await writer.write(.with { $0.info = [info] }) }
            return [:]
        }
    }

    func remove(
        request: ServerRequest<Containerd_Services_Snapshots_V1_RemoveSnapshotRequest>, context: ServerContext
    ) async throws -> ServerResponse<Google_Protobuf_Empty> {
        note(request.metadata)
        let key = request.message.key
        try state.withLock { state in
            guard state.snapshots.removeValue(forKey: key) != nil else { throw Self.notFound(key) }
            state.removed.append(key)
        }
        return ServerResponse(message: Google_Protobuf_Empty())
    }

    /// Called by containerd after each garbage collection of this snapshotter's snapshots.
    func cleanup(
        request: ServerRequest<Containerd_Services_Snapshots_V1_CleanupRequest>, context: ServerContext
    ) async throws -> ServerResponse<Google_Protobuf_Empty> {
        note(request.metadata)
        return ServerResponse(message: Google_Protobuf_Empty())
    }

    func view(
        request: ServerRequest<Containerd_Services_Snapshots_V1_ViewSnapshotRequest>, context: ServerContext
    ) async throws -> ServerResponse<Containerd_Services_Snapshots_V1_ViewSnapshotResponse> {
        throw Self.unneeded("View")
    }

    func mounts(
        request: ServerRequest<Containerd_Services_Snapshots_V1_MountsRequest>, context: ServerContext
    ) async throws -> ServerResponse<Containerd_Services_Snapshots_V1_MountsResponse> {
        throw Self.unneeded("Mounts")
    }

    func commit(
        request: ServerRequest<Containerd_Services_Snapshots_V1_CommitSnapshotRequest>, context: ServerContext
    ) async throws -> ServerResponse<Google_Protobuf_Empty> {
        throw Self.unneeded("Commit")
    }

    func update(
        request: ServerRequest<Containerd_Services_Snapshots_V1_UpdateSnapshotRequest>, context: ServerContext
    ) async throws -> ServerResponse<Containerd_Services_Snapshots_V1_UpdateSnapshotResponse> {
        throw Self.unneeded("Update")
    }

    func usage(
        request: ServerRequest<Containerd_Services_Snapshots_V1_UsageRequest>, context: ServerContext
    ) async throws -> ServerResponse<Containerd_Services_Snapshots_V1_UsageResponse> {
        throw Self.unneeded("Usage")
    }
}
