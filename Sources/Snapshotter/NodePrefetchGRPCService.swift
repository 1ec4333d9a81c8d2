import GRPCCore
import GRPCNIOTransportHTTP2Posix
import SlipwayAPI

/// What a node's prefetch did, as `slipway prefetch` reports it.
public struct NodePrefetchResult: Sendable {
    public var manifestDigest: String
    public var layers: Int
    public var bytesTransferred: Int64
    public var layersExtracted: Int
    public var seconds: Double

    public init(manifestDigest: String, layers: Int, bytesTransferred: Int64, layersExtracted: Int, seconds: Double) {
        self.manifestDigest = manifestDigest
        self.layers = layers
        self.bytesTransferred = bytesTransferred
        self.layersExtracted = layersExtracted
        self.seconds = seconds
    }
}

/// `slipway.snapshotter.v1.NodePrefetch` on the snapshotter's socket: warms the node's store for an image, with
/// the snapshotter's own store and credentials, so a pod with only the socket can do it (the prefetch DaemonSet).
/// The pulling itself is given (`prefetch`): it is the façade's, above this module.
struct NodePrefetchGRPCService: Slipway_Snapshotter_V1_NodePrefetch.SimpleServiceProtocol {
    let prefetch: @Sendable (_ reference: String, _ platform: String?) async throws -> NodePrefetchResult

    func prefetch(
        request: Slipway_Snapshotter_V1_PrefetchRequest, context: ServerContext
    ) async throws -> Slipway_Snapshotter_V1_PrefetchResponse {
        guard !request.reference.isEmpty else { throw RPCError(code: .invalidArgument, message: "prefetch needs an image reference") }
        let result: NodePrefetchResult
        do {
            result = try await prefetch(request.reference, request.platform.isEmpty ? nil : request.platform)
        } catch let error as RPCError {
            throw error
        } catch {
            throw RPCError(code: .unknown, message: "prefetch of \(request.reference): \(error)")
        }
        return .with {
            $0.manifestDigest = result.manifestDigest
            $0.layers = Int64(result.layers)
            $0.bytesTransferred = result.bytesTransferred
            $0.layersExtracted = Int64(result.layersExtracted)
            $0.seconds = result.seconds
        }
    }
}

/// The client side, for `slipway prefetch --snapshotter SOCKET`.
public enum NodePrefetchClient {
    public static func prefetch(socket: String, reference: String, platform: String?) async throws -> NodePrefetchResult {
        let transport = try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: socket), transportSecurity: .plaintext)
        return try await withGRPCClient(transport: transport) { client in
            let response = try await Slipway_Snapshotter_V1_NodePrefetch.Client(wrapping: client).prefetch(.with {
                $0.reference = reference
                $0.platform = platform ?? ""
            })
            return NodePrefetchResult(
                manifestDigest: response.manifestDigest, layers: Int(clamping: response.layers), bytesTransferred: response.bytesTransferred,
                layersExtracted: Int(clamping: response.layersExtracted), seconds: response.seconds)
        }
    }
}
