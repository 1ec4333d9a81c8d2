import Foundation
import GRPCCore
import SnapshotsAPI
import SwiftProtobuf

/// containerd's `containerd.services.snapshots.v1.Snapshots` over gRPC, answered by a `SnapshotService`: requests
/// become calls, snapshots and mounts become messages, and `SnapshotError` becomes the status code containerd
/// maps back to its error classes. The `snapshotter` field (the proxy plugin's name) and the namespace metadata
/// are not needed: containerd's metadata layer already puts the namespace in every key.
struct SnapshotsGRPCService: Containerd_Services_Snapshots_V1_Snapshots.SimpleServiceProtocol {
    let service: SnapshotService

    /// The most snapshots in one message of a `List` stream, so a large store does not make one huge message.
    static let listBatch = 100

    func prepare(
        request: Containerd_Services_Snapshots_V1_PrepareSnapshotRequest, context: ServerContext
    ) async throws -> Containerd_Services_Snapshots_V1_PrepareSnapshotResponse {
        let mounts = try await answering {
            try await service.prepare(key: request.key, parent: request.parent, labels: request.labels)
        }
        return .with { $0.mounts = mounts.map(Self.message) }
    }

    func view(
        request: Containerd_Services_Snapshots_V1_ViewSnapshotRequest, context: ServerContext
    ) async throws -> Containerd_Services_Snapshots_V1_ViewSnapshotResponse {
        let mounts = try await answering {
            try await service.view(key: request.key, parent: request.parent, labels: request.labels)
        }
        return .with { $0.mounts = mounts.map(Self.message) }
    }

    func mounts(
        request: Containerd_Services_Snapshots_V1_MountsRequest, context: ServerContext
    ) async throws -> Containerd_Services_Snapshots_V1_MountsResponse {
        let mounts = try await answering { try await service.mounts(key: request.key) }
        return .with { $0.mounts = mounts.map(Self.message) }
    }

    func commit(
        request: Containerd_Services_Snapshots_V1_CommitSnapshotRequest, context: ServerContext
    ) async throws -> Google_Protobuf_Empty {
        try await answering { try await service.snapshots.commit(name: request.name, key: request.key, labels: request.labels) }
        return Google_Protobuf_Empty()
    }

    func remove(
        request: Containerd_Services_Snapshots_V1_RemoveSnapshotRequest, context: ServerContext
    ) async throws -> Google_Protobuf_Empty {
        try await answering { try await service.remove(key: request.key) }
        return Google_Protobuf_Empty()
    }

    func stat(
        request: Containerd_Services_Snapshots_V1_StatSnapshotRequest, context: ServerContext
    ) async throws -> Containerd_Services_Snapshots_V1_StatSnapshotResponse {
        let snapshot = try await answering { try await service.snapshots.stat(key: request.key) }
        return .with { $0.info = Self.message(snapshot) }
    }

    func update(
        request: Containerd_Services_Snapshots_V1_UpdateSnapshotRequest, context: ServerContext
    ) async throws -> Containerd_Services_Snapshots_V1_UpdateSnapshotResponse {
        let snapshot = try await answering {
            try await service.snapshots.update(name: request.info.name, labels: request.info.labels, fieldPaths: request.updateMask.paths)
        }
        return .with { $0.info = Self.message(snapshot) }
    }

    func list(
        request: Containerd_Services_Snapshots_V1_ListSnapshotsRequest,
        response: RPCWriter<Containerd_Services_Snapshots_V1_ListSnapshotsResponse>, context: ServerContext
    ) async throws {
        let snapshots = try await answering { try await service.snapshots.list(filters: request.filters) }
        var start = 0
        while start < snapshots.count {
            let batch = snapshots[start..<min(start + Self.listBatch, snapshots.count)]
            try await response.write(.with { $0.info = batch.map(Self.message) })
            start += Self.listBatch
        }
    }

    func usage(
        request: Containerd_Services_Snapshots_V1_UsageRequest, context: ServerContext
    ) async throws -> Containerd_Services_Snapshots_V1_UsageResponse {
        let usage = try await answering { try await service.snapshots.usage(key: request.key) }
        return .with {
            $0.size = usage.bytes
            $0.inodes = usage.inodes
        }
    }

    func cleanup(
        request: Containerd_Services_Snapshots_V1_CleanupRequest, context: ServerContext
    ) async throws -> Google_Protobuf_Empty {
        _ = try await answering { try await service.cleanup() }
        return Google_Protobuf_Empty()
    }

    // MARK: Translation

    /// Runs `body`, turning its failure into the status containerd understands.
    private func answering<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as SnapshotError {
            throw RPCError(code: Self.code(of: error), message: error.description)
        } catch let error as RPCError {
            throw error
        } catch {
            throw RPCError(code: .internalError, message: "\(error)")
        }
    }

    static func code(of error: SnapshotError) -> RPCError.Code {
        switch error {
        case .notFound: return .notFound
        case .alreadyExists: return .alreadyExists
        case .failedPrecondition: return .failedPrecondition
        case .invalidArgument: return .invalidArgument
        }
    }

    static func message(_ mount: SnapshotMount) -> Containerd_Types_Mount {
        .with {
            $0.type = mount.type
            $0.source = mount.source
            $0.options = mount.options
        }
    }

    static func message(_ snapshot: Snapshot) -> Containerd_Services_Snapshots_V1_Info {
        .with {
            $0.name = snapshot.name
            $0.parent = snapshot.parent
            switch snapshot.kind {
            case .view: $0.kind = .view
            case .active: $0.kind = .active
            case .committed: $0.kind = .committed
            }
            $0.createdAt = Google_Protobuf_Timestamp(date: snapshot.createdAt)
            $0.updatedAt = Google_Protobuf_Timestamp(date: snapshot.updatedAt)
            $0.labels = snapshot.labels
        }
    }
}
