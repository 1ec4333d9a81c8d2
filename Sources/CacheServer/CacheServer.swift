import AsyncHTTPClient
import ContentStore
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import OCI
import Registry
import Synchronization

/// `slipway serve`: a pull-through cache registry over a Slipway store. Serves the distribution read API; a blob
/// missing from the store is fetched upstream once however many clients ask, and streamed to all of them while it
/// arrives; tags are revalidated with HEAD after a TTL; Range requests are answered on cold blobs without waiting
/// for the whole blob.
public final class CacheServer: Sendable, HTTPHandler {
    public struct Configuration: Sendable {
        /// `http(s)://HOST[:PORT]` of each upstream; the first serves requests without `?ns=`.
        public var upstreams: [String]
        /// How long a tag is served from the store before it is checked upstream again (with HEAD).
        public var tagTTL: Duration = .seconds(300)
        /// Blob bytes the store may hold; least recently used blobs are removed beyond it. Nil: no limit.
        public var maxStoreBytes: Int64?
        /// A fill that receives nothing for this long is abandoned; its waiting clients get an error.
        public var upstreamStallTimeout: Duration = .seconds(30)
        /// A Range on a blob still filling waits for the fill when it starts at most this far beyond what has
        /// arrived; further out it is fetched upstream as a range.
        public var rangeWaitDistance: Int64 = 8 << 20
        public var authenticator: ClientAuthenticator = .open
        /// Answer `/metrics` without credentials even when the authenticator requires them.
        public var metricsPublic = false
        public var connectionLimits = ConnectionLimits()
        /// Build a gzip index of every plain gzip layer filled, and answer referrers with them (`serve --index`).
        public var buildGzipIndexes = false

        public init(upstreams: [String]) { self.upstreams = upstreams }
    }

    let store: ContentStore
    let configuration: Configuration
    let upstreams: Upstreams
    let logger: Logger
    let accessLog: AccessLog?
    let metrics = CacheMetrics()
    let usage: StoreUsage
    private let http: HTTPClient
    private let server: HTTPServer
    /// Tags and when upstream last confirmed them.
    let validatedTags = Mutex<[String: ContinuousClock.Instant]>([:])
    /// Sizes and types learnt from manifests served, so a blob miss needs no HEAD upstream.
    let knownBlobs = Mutex<[Digest: Descriptor]>([:])
    let manifestFetches = SingleFlight<String, Descriptor>()
    let blobSizeLookups = SingleFlight<Digest, Descriptor?>()
    let fills = Mutex<[Digest: BlobFill]>([:])

    public init(store: ContentStore, configuration: Configuration, credentials: any CredentialProvider, logger: Logger, accessLog: AccessLog?) throws {
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.accessLog = accessLog
        let stall = TimeAmount.seconds(Int64(configuration.upstreamStallTimeout.components.seconds))
        http = try RegistryClient.makeHTTPClient(readTimeout: stall)
        // Few, quick retries: a client is waiting, and a cached copy may answer instead.
        let retry = RetryPolicy(maxAttempts: 3, baseDelay: 0.2, maxDelay: 2, maxRetryAfter: 5)
        do {
            upstreams = try Upstreams(urls: configuration.upstreams, credentials: credentials, http: http, retry: retry, logger: logger)
        } catch {
            try? http.syncShutdown()
            throw CacheServerError.configuration("\(error)")
        }
        usage = StoreUsage(store: store, limit: configuration.maxStoreBytes)
        server = HTTPServer(limits: configuration.connectionLimits, logger: logger)
        metrics.set(.storeBytes, usage.totalBytes)
    }

    /// Serves until `stop()`. Holds the store lock shared, so `slipway gc` waits rather than removing blobs that
    /// are being served.
    public func run(host: String, port: Int, onListening: @Sendable (String, Int) -> Void = { _, _ in }) async throws {
        let lock = try await store.lockForWriting()
        defer { lock.release() }
        do {
            try await server.run(host: host, port: port, handler: self) { address in onListening(address.ipAddress ?? host, address.port ?? port) }
        } catch {
            try? await http.shutdown()
            throw error
        }
        try? await http.shutdown()
    }

    /// Graceful stop: no new connections; requests in progress get `grace` to finish.
    public func stop(grace: Duration = .seconds(10)) async {
        await server.stop(grace: grace)
    }

    // MARK: Requests

    struct Outcome {
        var cache: String?
        var user: String?
        var error: String?
    }

    func handle(_ request: HTTPRequest, response: ResponseWriter) async throws {
        let started = ContinuousClock.now
        let target = RegistryRoute.Target(request.uri)
        var outcome = Outcome()
        var kind = "other"
        defer {
            let seconds = (ContinuousClock.now - started).seconds
            metrics.observe(kind: kind, seconds: seconds)
            metrics.add(.servedBytes, response.bodyBytes)
            let status = Int(response.status?.code ?? 0)
            if (400..<500).contains(status) { metrics.add(.clientErrors) }
            accessLog?.record(
                AccessLog.Entry(
                    time: AccessLog.now(), remote: request.remoteAddress, method: request.method.rawValue, path: String(request.uri.prefix(512)),
                    status: status, bytes: response.bodyBytes, ms: (seconds * 1000 * 1000).rounded() / 1000, cache: outcome.cache,
                    user: outcome.user, error: outcome.error))
        }
        do {
            guard request.method == .GET || request.method == .HEAD else {
                throw RegistryErrorAnswer(status: 405, code: "UNSUPPORTED", message: "this is a read-only pull-through cache; \(request.method) is not supported")
            }
            let route = try RegistryRoute(path: target.path)
            if case .metrics = route, configuration.metricsPublic {
                try await sendMetrics(to: response)
                return
            }
            let authorization = request.headers.first(name: "Authorization")
            switch await configuration.authenticator.authorize(authorization: authorization, client: request.clientKey) {
            case .allowed(let user): outcome.user = user
            case .denied(let reason):
                throw RegistryErrorAnswer(
                    status: 401, code: "UNAUTHORIZED", message: "authentication required (\(reason))",
                    headers: [("WWW-Authenticate", configuration.authenticator.challenge)])
            case .throttled(let retryAfterSeconds, let reason):
                throw RegistryErrorAnswer(
                    status: 429, code: "TOOMANYREQUESTS", message: reason, headers: [("Retry-After", String(retryAfterSeconds))])
            }
            switch route {
            case .metrics:
                try await sendMetrics(to: response)
            case .base:
                try await response.send(.ok, headers: ["Content-Type": "application/json", "Docker-Distribution-API-Version": "registry/2.0"], body: Array("{}".utf8))
            case .manifest(let name, let reference):
                kind = "manifest"
                try await serveManifest(name: name, reference: reference, namespace: target.query["ns"], request: request, response: response, outcome: &outcome)
            case .blob(let name, let digest):
                kind = "blob"
                try await serveBlob(name: name, digest: digest, namespace: target.query["ns"], request: request, response: response, outcome: &outcome)
            case .referrers(let name, let subject):
                kind = "referrers"
                try await serveReferrers(name: name, subject: subject, query: target.query, namespace: target.query["ns"], response: response)
            case .tags(let name):
                try await serveTags(name: name, query: target.query, namespace: target.query["ns"], response: response)
            }
        } catch let rejection as RegistryRoute.Rejection {
            outcome.error = rejection.message
            try await sendError(RegistryErrorAnswer(status: rejection.status, code: rejection.code, message: rejection.message), to: response, method: request.method)
        } catch let answer as RegistryErrorAnswer {
            outcome.error = answer.message
            if answer.status >= 500 { metrics.add(.upstreamErrors) }
            try await sendError(answer, to: response, method: request.method)
        } catch {
            outcome.error = "\(error)"
            // Mid-body: the connection is cut, so the client sees a failed transfer, never a short "complete" one.
            if response.headSent { throw error }
            try await sendError(RegistryErrorAnswer(status: 500, code: "UNKNOWN", message: "\(error)"), to: response, method: request.method)
        }
    }

    private func sendMetrics(to response: ResponseWriter) async throws {
        try await response.send(.ok, headers: ["Content-Type": "text/plain; version=0.0.4"], body: Array(metrics.render().utf8))
    }

    private func sendError(_ answer: RegistryErrorAnswer, to response: ResponseWriter, method: HTTPMethod) async throws {
        var headers: HTTPHeaders = ["Content-Type": "application/json"]
        for (name, value) in answer.headers { headers.replaceOrAdd(name: name, value: value) }
        try await response.send(HTTPResponseStatus(statusCode: answer.status), headers: headers, body: answer.body)
    }

    /// The upstream for a request, or the spec's NAME_UNKNOWN when `ns` names a registry this server does not mirror.
    func upstream(for namespace: String?) throws -> Upstream {
        guard let upstream = upstreams.upstream(namespace: namespace) else {
            throw RegistryErrorAnswer(status: 404, code: "NAME_UNKNOWN", message: "this cache does not mirror \(namespace ?? "")")
        }
        return upstream
    }

    /// A failure talking upstream, as the answer for the client.
    func answer(for error: any Error, what: String) -> RegistryErrorAnswer {
        switch error {
        case let answer as RegistryErrorAnswer: return answer
        case RegistryError.notFound:
            return RegistryErrorAnswer(status: 404, code: what == "blob" ? "BLOB_UNKNOWN" : "MANIFEST_UNKNOWN", message: "\(error)")
        case RegistryError.unauthorized, RegistryError.denied:
            return .badGateway("upstream refused the cache's credentials: \(error)")
        case RegistryError.digestMismatch, RegistryError.sizeMismatch, RegistryError.invalidResponse, is OCIError:
            return .badGateway("upstream sent bad content, nothing was cached: \(error)")
        default:
            return .unavailable("upstream unavailable and the \(what) is not cached: \(error)")
        }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
