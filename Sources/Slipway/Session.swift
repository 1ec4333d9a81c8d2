import AsyncHTTPClient
import ContentStore
import Foundation
import Images
import Logging
import OCI
import Registry
import Synchronization

/// Shared state of one command: the HTTP client, one registry client per host, credentials and options.
/// Call `shutdown()` when done (AsyncHTTPClient requires an explicit shutdown).
public final class Session: Sendable {
    public struct Options: Sendable {
        public var plainHTTP = false
        public var platform = Platform.host
        public var retry = RetryPolicy.default
        public var readTimeoutSeconds: Int64 = 60
        public var concurrency = 4
        public var credentials: (any CredentialProvider)?
        public var tls = TLSOptions()
        /// Pull from every registry through this mirror; pushes go to the registry itself.
        public var mirror: RegistryMirror?
        public init() {}
    }

    public let options: Options
    public let logger: Logger
    let http: HTTPClient
    let credentials: any CredentialProvider
    private let clients = Mutex<[String: RegistryClient]>([:])
    private let pushClients = Mutex<[String: RegistryClient]>([:])

    public init(options: Options, logger: Logger) throws {
        // Credentials first: if the docker config is unreadable we throw before owning an HTTP client, which
        // must be shut down explicitly.
        self.credentials = try options.credentials ?? DockerConfigCredentials()
        self.options = options
        self.logger = logger
        self.http = try RegistryClient.makeHTTPClient(readTimeout: .seconds(options.readTimeoutSeconds), tls: options.tls)
    }

    public func shutdown() async {
        try? await http.shutdown()
    }

    /// Runs `body`, then shuts the session down however `body` ends.
    public func run<T>(_ body: (Session) async throws -> T) async throws -> T {
        do {
            let result = try await body(self)
            await shutdown()
            return result
        } catch {
            await shutdown()
            throw error
        }
    }

    /// The client to pull from `registry`: through the mirror when there is one.
    public func client(for registry: String) -> RegistryClient {
        cachedClient(registry, through: options.mirror, in: clients)
    }

    /// The client to push to `registry`: never a mirror (a pull-through cache does not take pushes).
    public func pushClient(for registry: String) -> RegistryClient {
        options.mirror == nil ? client(for: registry) : cachedClient(registry, through: nil, in: pushClients)
    }

    private func cachedClient(
        _ registry: String, through mirror: RegistryMirror?, in clients: borrowing Mutex<[String: RegistryClient]>
    ) -> RegistryClient {
        clients.withLock { clients in
            if let existing = clients[registry] { return existing }
            let client = RegistryClient(
                registry: registry, through: mirror, plainHTTP: options.plainHTTP, credentials: credentials, http: http, retry: options.retry,
                logger: logger)
            clients[registry] = client
            return client
        }
    }

    /// A source for `oci:PATH[:NAME]` or a registry reference.
    public func source(for location: ImageLocation) throws -> any ImageSource {
        switch location {
        case .registry(let reference):
            return RemoteImageSource(reference: reference, client: client(for: reference.registry))
        case .layout(let path, let name):
            return LayoutImageSource(store: try ContentStore(existingLayoutAt: path), imageName: name)
        }
    }

    /// A source whose configs go through `store` and whose blobs come from `store` when an earlier pull left them.
    public func source(for location: ImageLocation, backedBy store: ContentStore) throws -> any ImageSource {
        StoreBackedSource(inner: try source(for: location), store: store)
    }

    public func destination(for location: ImageLocation, chunkSize: Int64? = nil) throws -> any ImageDestination {
        switch location {
        case .registry(let reference):
            return RemoteDestination(reference: reference, client: pushClient(for: reference.registry), chunkSize: chunkSize)
        case .layout(let path, let name):
            return LayoutDestination(store: try ContentStore(root: path), imageName: name ?? "latest")
        }
    }
}
