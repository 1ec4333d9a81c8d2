import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import OCI
import Synchronization

/// A distribution-spec client for one registry host: authentication (anonymous, basic, bearer tokens with
/// per-scope caching and refresh), retries with backoff, and plain HTTP for loopback.
public final class RegistryClient: Sendable {
    public let registry: String
    /// Host and port to connect to (`registry-1.docker.io` for Docker Hub, the mirror's through a mirror).
    let host: String
    /// Through a mirror: `registry`, sent as `ns` with every request to the mirror.
    let namespace: String?
    /// The scheme when it is known without asking: https for remote hosts, http when forced.
    private let fixedScheme: String?
    /// For loopback registries: the scheme learnt by probing once (TLS first, as Docker does).
    private let probedScheme = Mutex<String?>(nil)
    let http: HTTPClient
    let credentials: any CredentialProvider
    let retry: RetryPolicy
    let auth: AuthCache
    let logger: Logger

    /// - Parameters:
    ///   - registry: the host as written in references (`docker.io`, `localhost:5000`).
    ///   - mirror: reach the registry through this mirror (the mirror's credentials are used, not the registry's).
    ///   - plainHTTP: force HTTP; by default HTTP is used for localhost and 127.0.0.0/8 only.
    public init(
        registry: String, through mirror: RegistryMirror? = nil, plainHTTP: Bool = false, credentials: any CredentialProvider,
        http: HTTPClient, retry: RetryPolicy = .default, logger: Logger = Logger(label: "slipway.registry")
    ) {
        self.registry = registry
        self.host = mirror?.host ?? (registry == Reference.dockerHub ? "registry-1.docker.io" : registry)
        self.namespace = mirror == nil ? nil : registry
        // A mirror's URL says its scheme; --plain-http is about the registries themselves.
        self.fixedScheme = mirror.map { $0.plainHTTP ? "http" : "https" } ?? (plainHTTP ? "http" : Self.isLoopback(host) ? nil : "https")
        self.http = http
        self.credentials = credentials
        self.retry = retry
        self.auth = AuthCache()
        self.logger = logger
    }

    /// `scheme://host`. For a loopback registry this is http until `resolveScheme()` has probed for TLS.
    public var baseURL: String { "\(fixedScheme ?? probedScheme.withLock { $0 } ?? "http")://\(host)" }

    /// A loopback registry may or may not speak TLS (a test registry usually does not, a local mirror may).
    /// Like Docker with its implied insecure registries, try a TLS handshake once and fall back to plain HTTP
    /// when the server does not speak TLS. Certificates are checked on the real requests, not here.
    func resolveScheme() async {
        guard fixedScheme == nil, probedScheme.withLock({ $0 }) == nil else { return }
        var configuration = HTTPClient.Configuration()
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .none
        configuration.tlsConfiguration = tls
        configuration.timeout = .init(connect: .seconds(3), read: .seconds(3))
        configuration.connectionPool.retryConnectionEstablishment = false
        let probe = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        var scheme = "http"
        do {
            let response = try await probe.execute(HTTPClientRequest(url: "https://\(host)/v2/"), timeout: .seconds(5))
            _ = try? await Self.collect(response.body, limit: 1 << 20)
            scheme = "https"
        } catch {
            logger.debug("\(host) does not speak TLS (\(error)); using plain HTTP")
        }
        try? await probe.shutdown()
        probedScheme.withLock { $0 = $0 ?? scheme }
    }

    /// Whether a host is on this machine, where TLS is not expected (`localhost`, 127.0.0.0/8, `[::1]`).
    public static func isLoopback(_ host: String) -> Bool {
        var name = Substring(host)
        if name.hasPrefix("[") { return name.hasPrefix("[::1]") }
        if let colon = name.lastIndex(of: ":") { name = name[..<colon] }
        if name == "localhost" { return true }
        let octets = name.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }

    /// An HTTP client configured for registries: no transparent decompression (blob bytes must hash as served),
    /// bounded redirects (AHC strips `Authorization` on cross-origin hops), and a read timeout that turns a stalled
    /// server into a retryable error.
    public static func makeHTTPClient(readTimeout: TimeAmount = .seconds(60), tls: TLSOptions = TLSOptions()) throws -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.tlsConfiguration = try tls.configuration()
        configuration.redirectConfiguration = .follow(max: 5, allowCycles: false)
        configuration.timeout = .init(connect: .seconds(15), read: readTimeout)
        configuration.decompression = .disabled
        configuration.httpVersion = .automatic
        // Our own retry loop decides; AHC's would retry a failed TLS handshake until the connect timeout.
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    // MARK: Requests

    struct Request {
        var method: HTTPMethod
        /// A path below the base URL (`/v2/…`) or an absolute URL (upload locations).
        var target: String
        var headers: HTTPHeaders = [:]
        var scope: String
        var body: (@Sendable () -> HTTPClientRequest.Body)? = nil
        var timeout: TimeAmount = .hours(6)
        /// False when a failed attempt cannot simply be sent again (a PUT that ended an upload session).
        var retryable = true

        var url: String = ""
    }

    /// Sends a request with authentication and retries on 429/5xx and network errors. The caller owns the
    /// response body and must consume it.
    func send(_ request: Request, expecting accepted: Set<Int>) async throws -> HTTPClientResponse {
        await resolveScheme()
        let url = resolve(request.target)
        let maxAttempts = request.retryable ? retry.maxAttempts : 1
        var attempt = 0
        while true {
            attempt += 1
            do {
                let response = try await sendAuthenticated(request, url: url)
                let status = Int(response.status.code)
                if accepted.contains(status) { return response }
                let body = try await Self.collect(response.body, limit: 64 * 1024, url: url)
                let error = Self.error(for: status, method: request.method.rawValue, url: url, body: body)
                if error.isTransient, attempt < maxAttempts {
                    let delay = retry.delay(afterAttempt: attempt, retryAfter: RetryPolicy.parseRetryAfter(response.headers.first(name: "Retry-After")))
                    logger.info("\(request.method) \(url): HTTP \(status), retrying in \(String(format: "%.1f", delay)) s (attempt \(attempt + 1) of \(maxAttempts))")
                    try await Task.sleep(for: .seconds(delay))
                    continue
                }
                // A request that may not be resent reports the failure itself, so its caller can start over.
                if error.isTransient, maxAttempts > 1 { throw RegistryError.retriesExhausted(attempts: attempt, last: error.description) }
                throw error
            } catch let error as RegistryError where !error.isTransient {
                throw error
            } catch is CancellationError {
                throw CancellationError()
            } catch let error as NIOSSLError {
                // A certificate that fails verification will fail the same way next time.
                throw RegistryError.tls(url: url, underlying: String(describing: error))
            } catch {
                // Includes a request body that failed verification on the way (a streamed copy): resent afresh.
                let failure = (error as? RegistryError) ?? RegistryError.transport(url: url, underlying: String(describing: error))
                guard attempt < maxAttempts else {
                    throw maxAttempts == 1 ? failure : RegistryError.retriesExhausted(attempts: attempt, last: failure.description)
                }
                let delay = retry.delay(afterAttempt: attempt, retryAfter: nil)
                logger.info("\(failure), retrying in \(String(format: "%.1f", delay)) s")
                try await Task.sleep(for: .seconds(delay))
            }
        }
    }

    /// One request, answering at most one authentication challenge.
    private func sendAuthenticated(_ request: Request, url: String) async throws -> HTTPClientResponse {
        // Absolute URLs (upload locations, Link pages) may name another host: our credentials stay home.
        let sameOrigin = Self.origin(of: url) == Self.origin(of: baseURL)
        var authorization = sameOrigin ? await auth.header(for: request.scope, registry: registry) : nil
        for round in 0..<2 {
            var outgoing = HTTPClientRequest(url: url)
            outgoing.method = request.method
            outgoing.headers = request.headers
            outgoing.headers.replaceOrAdd(name: "User-Agent", value: "slipway/0.1")
            if let authorization { outgoing.headers.replaceOrAdd(name: "Authorization", value: authorization) }
            if let body = request.body { outgoing.body = body() }
            let response = try await http.execute(outgoing, timeout: request.timeout)
            guard response.status == .unauthorized, round == 0, sameOrigin,
                let header = response.headers.first(name: "WWW-Authenticate"), let challenge = AuthChallenge(header: header)
            else { return response }
            _ = try? await Self.collect(response.body, limit: 64 * 1024)
            authorization = try await authenticate(challenge, scope: request.scope)
        }
        preconditionFailure("unreachable: the loop returns on its second round")
    }

    private func authenticate(_ challenge: AuthChallenge, scope: String) async throws -> String {
        let found: Credentials?
        if case .known(let known) = await auth.credentials {
            found = known
        } else {
            found = try await credentials.credentials(for: namespace == nil ? registry : host)
            await auth.remember(credentials: found)
        }
        switch challenge.scheme {
        case .basic:
            guard let found else { throw RegistryError.unauthorized(url: baseURL, detail: "the registry asks for a user name and password") }
            let header = found.basicHeader
            await auth.storeBasic(header)
            return header
        case .bearer:
            guard let realm = challenge.realm else { throw RegistryError.invalidResponse(url: baseURL, reason: "Bearer challenge without realm") }
            let token = try await fetchToken(realm: realm, service: challenge.service, scope: Self.tokenScope(asked: scope, challenged: challenge.scope), credentials: found)
            await auth.storeToken(token.value, scope: scope, expiresIn: token.expiresIn)
            return "Bearer \(token.value)"
        case .other(let name):
            throw RegistryError.unauthorized(url: baseURL, detail: "unsupported authentication scheme \(name)")
        }
    }

    private func fetchToken(realm: String, service: String?, scope: String, credentials: Credentials?) async throws
        -> (value: String, expiresIn: Double)
    {
        guard var components = URLComponents(string: realm), let realmHost = components.host else {
            throw RegistryError.invalidResponse(url: baseURL, reason: "bad token realm '\(realm)'")
        }
        // Any other scheme AHC knows (http+unix, https+unix) would let a registry aim us at a local socket.
        guard let realmScheme = components.scheme?.lowercased(), realmScheme == "http" || realmScheme == "https" else {
            throw RegistryError.invalidResponse(url: baseURL, reason: "token realm '\(realm)' is not an http:// or https:// URL")
        }
        var query = components.queryItems ?? []
        if let service { query.append(URLQueryItem(name: "service", value: service)) }
        for item in scope.split(separator: " ") { query.append(URLQueryItem(name: "scope", value: String(item))) }
        components.queryItems = query
        guard let tokenURL = components.string else { throw RegistryError.invalidResponse(url: baseURL, reason: "bad token realm") }
        var request = HTTPClientRequest(url: tokenURL)
        if let credentials, Self.mayReceiveCredentials(realmHost: realmHost, scheme: components.scheme, registryURL: baseURL) {
            if credentials.username.isEmpty {
                request = HTTPClientRequest(url: realm)
                request.method = .POST
                request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
                var form = URLComponents()
                form.queryItems = [
                    URLQueryItem(name: "grant_type", value: "refresh_token"), URLQueryItem(name: "refresh_token", value: credentials.secret),
                    URLQueryItem(name: "service", value: service ?? ""), URLQueryItem(name: "scope", value: scope),
                    URLQueryItem(name: "client_id", value: "slipway"),
                ]
                request.body = .bytes(ByteBuffer(string: form.percentEncodedQuery ?? ""))
            } else {
                request.headers.add(name: "Authorization", value: credentials.basicHeader)
            }
        }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .seconds(60))
        } catch {
            throw RegistryError.transport(url: tokenURL, underlying: String(describing: error))
        }
        let body = try await Self.collect(response.body, limit: 1 << 20)
        guard response.status == .ok else {
            if response.status == .unauthorized || response.status == .forbidden {
                throw RegistryError.unauthorized(url: realm, detail: "token server refused: \(ErrorBody.summary(of: body))")
            }
            throw RegistryError.unexpectedStatus(Int(response.status.code), method: "GET", url: realm, detail: ErrorBody.summary(of: body))
        }
        struct TokenAnswer: Decodable {
            var token: String?
            var access_token: String?
            var expires_in: Double?
        }
        guard let answer = try? JSONDecoder().decode(TokenAnswer.self, from: Data(body)), let value = answer.token ?? answer.access_token,
            !value.isEmpty
        else { throw RegistryError.invalidResponse(url: realm, reason: "token answer without a token") }
        return (value, try Self.tokenLifetime(announced: answer.expires_in, realm: realm))
    }

    /// The longest a token is reused: a server announcing years (or 1e300 s) must not put the expiry beyond what
    /// a clock instant can hold, and a day is longer than any registry's tokens live.
    static let maximumTokenLifetime: Double = 86_400

    /// Seconds to reuse a token for: the token spec's 60 s when unstated, otherwise the announced lifetime brought
    /// into 1 s...a day.
    static func tokenLifetime(announced: Double?, realm: String) throws -> Double {
        guard let announced else { return 60 }
        guard announced.isFinite else {
            throw RegistryError.invalidResponse(url: realm, reason: "token expires_in \(announced) is not a number of seconds")
        }
        return min(max(announced, 1), maximumTokenLifetime)
    }

    /// The scope to ask the token server for: ours, which names every action this request needs (a HEAD before a
    /// push is challenged for `pull` only), plus the challenge's when it names another resource.
    static func tokenScope(asked: String, challenged: String?) -> String {
        guard let challenged, !challenged.isEmpty else { return asked }
        let resources = Set(asked.split(separator: " ").map { $0.split(separator: ":").dropLast().joined(separator: ":") })
        let extra = challenged.split(separator: " ").filter { !resources.contains($0.split(separator: ":").dropLast().joined(separator: ":")) }
        return ([asked] + extra.map(String.init)).joined(separator: " ")
    }

    /// Credentials go only to a token realm on the registry's own host (over TLS if the registry uses TLS), or over
    /// TLS to a host of the same domain (Docker Hub: registry-1.docker.io → auth.docker.io), never to an IP
    /// address other than the registry's (the lesson of distribution's f215e51). The domain test takes the last two
    /// labels; a registry under a public suffix such as co.uk shares with its suffix, which we accept knowingly.
    static func mayReceiveCredentials(realmHost: String, scheme: String?, registryURL: String) -> Bool {
        guard let registry = URLComponents(string: registryURL), let registryHost = registry.host else { return false }
        if realmHost == registryHost { return scheme == "https" || registry.scheme == "http" }
        guard scheme == "https" else { return false }
        func isAddress(_ host: String) -> Bool { host.contains(":") || host.split(separator: ".").allSatisfy { UInt8($0) != nil } }
        guard !isAddress(realmHost), !isAddress(registryHost) else { return false }
        func domain(_ host: String) -> String { host.split(separator: ".").suffix(2).joined(separator: ".") }
        return domain(realmHost) == domain(registryHost)
    }

    static func origin(of url: String) -> String {
        guard let components = URLComponents(string: url) else { return url }
        return "\(components.scheme ?? "")://\(components.host ?? ""):\(components.port.map(String.init) ?? "")"
    }

    func resolve(_ target: String) -> String {
        if target.hasPrefix("http://") || target.hasPrefix("https://") { return target }
        guard let namespace, !target.contains("ns=") else { return baseURL + target }
        let encoded = namespace.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed.subtracting(["&", "=", "+"])) ?? namespace
        return baseURL + target + (target.contains("?") ? "&" : "?") + "ns=" + encoded
    }

    static func collect(_ body: HTTPClientResponse.Body, limit: Int, url: String = "response body") async throws -> [UInt8] {
        var bytes: [UInt8] = []
        for try await buffer in body {
            guard bytes.count + buffer.readableBytes <= limit else { throw RegistryError.tooLarge(limit: Int64(limit), url: url) }
            bytes.append(contentsOf: buffer.readableBytesView)
        }
        return bytes
    }

    static func error(for status: Int, method: String, url: String, body: [UInt8]) -> RegistryError {
        let detail = ErrorBody.summary(of: body)
        switch status {
        case 401: return .unauthorized(url: url, detail: detail)
        case 403: return .denied(url: url, detail: detail)
        case 404: return .notFound(what: url.contains("/manifests/") ? "manifest" : url.contains("/blobs/") ? "blob" : "resource", url: url, detail: detail)
        default: return .unexpectedStatus(status, method: method, url: url, detail: detail)
        }
    }

    static func scope(_ repository: String, push: Bool = false) -> String {
        "repository:\(repository):\(push ? "pull,push" : "pull")"
    }
}

/// Authorization headers by scope. Tokens are refreshed a little before they expire and on any 401.
actor AuthCache {
    private var tokens: [String: (header: String, expires: ContinuousClock.Instant)] = [:]
    private var basic: String?
    enum CredentialLookup { case notYet, known(Credentials?) }
    /// Looked up once per client: a credential helper is a process start, not something to run per 401.
    private(set) var credentials = CredentialLookup.notYet

    func remember(credentials found: Credentials?) { credentials = .known(found) }

    func header(for scope: String, registry: String) -> String? {
        if let basic { return basic }
        guard let entry = tokens[scope], entry.expires > .now else { return nil }
        return entry.header
    }

    func storeBasic(_ header: String) { basic = header }

    func storeToken(_ token: String, scope: String, expiresIn: Double) {
        let margin = min(10, expiresIn / 4)
        tokens[scope] = ("Bearer \(token)", .now + .seconds(expiresIn - margin))
    }
}

/// How to trust registries' certificates: the system's roots plus any given CA files, or no check at all.
public struct TLSOptions: Sendable {
    /// PEM files of extra certificate authorities (a site's internal CA).
    public var caCertificateFiles: [String] = []
    /// false skips certificate verification (skopeo's `--tls-verify=false`): for tests and emergencies only.
    public var verify = true

    public init(caCertificateFiles: [String] = [], verify: Bool = true) {
        self.caCertificateFiles = caCertificateFiles
        self.verify = verify
    }

    func configuration() throws -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        for file in caCertificateFiles {
            guard FileManager.default.isReadableFile(atPath: file) else {
                throw RegistryError.invalidResponse(url: file, reason: "CA certificate file is missing or unreadable")
            }
        }
        configuration.additionalTrustRoots = caCertificateFiles.map { .file($0) }
        if !verify { configuration.certificateVerification = .none }
        return configuration
    }
}
