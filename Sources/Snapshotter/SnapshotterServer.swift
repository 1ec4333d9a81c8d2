import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix

#if canImport(Glibc)
import Glibc
#endif

/// `slipway snapshotter`: containerd's snapshots API on a unix socket, for containerd's `proxy_plugins`. It runs
/// until `stop`, which lets the requests in flight finish.
public final class SnapshotterServer: Sendable {
    public let socket: String
    private let server: GRPCServer<HTTP2ServerTransport.Posix>

    /// Takes over `socket`: a socket file nobody listens on (left by a killed snapshotter) is replaced, a live one
    /// is refused. With `prefetch`, the socket also serves `slipway prefetch --snapshotter`.
    public init(
        service: SnapshotService, socket: String,
        prefetch: (@Sendable (_ reference: String, _ platform: String?) async throws -> NodePrefetchResult)? = nil
    ) throws {
        self.socket = socket
        try Self.claim(socket)
        let transport = HTTP2ServerTransport.Posix(address: .unixDomainSocket(path: socket), transportSecurity: .plaintext)
        var services: [any RegistrableRPCService] = [SnapshotsGRPCService(service: service)]
        if let prefetch { services.append(NodePrefetchGRPCService(prefetch: prefetch)) }
        server = GRPCServer(transport: transport, services: services)
    }

    /// Serves until `stop`; `onListening` runs once the socket accepts connections.
    public func run(onListening: @escaping @Sendable () -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.server.serve() }
            if try await server.listeningAddress != nil {
                // Whoever can connect can make the node pull images with its credentials, as with containerd's own
                // socket: root only.
                chmod(socket, 0o600)
                onListening()
            }
            try await group.waitForAll()
        }
        unlink(socket)
    }

    public func stop() { server.beginGracefulShutdown() }

    private static func claim(_ socket: String) throws {
        let directory = (socket as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o711])
        var info = stat()
        guard lstat(socket, &info) == 0 else { return }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw SnapshotError.failedPrecondition("\(socket) exists and is not a socket; choose another --address")
        }
        if acceptsConnections(socket) {
            throw SnapshotError.failedPrecondition("a server already listens on \(socket); stop it first")
        }
        unlink(socket)
    }

    private static func acceptsConnections(_ path: String) -> Bool {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
    }
}
