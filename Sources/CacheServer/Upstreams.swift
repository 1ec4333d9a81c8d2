import AsyncHTTPClient
import Foundation
import Logging
import OCI
import Registry

/// A registry this cache mirrors.
struct Upstream: Sendable {
    /// As written in references (`docker.io`, `127.0.0.1:5000`): the key for `?ns=` and for names in the store.
    let registry: String
    let client: RegistryClient

    /// The repository upstream: Docker Hub keeps single-component names under `library/`.
    func repository(for name: String) -> String {
        registry == Reference.dockerHub && !name.contains("/") ? "library/\(name)" : name
    }

    /// A blob of `repository` upstream (a repository as `repository(for:)` gives it).
    func blob(_ descriptor: Descriptor, repository: String) -> RegistryBlob {
        RegistryBlob(client: client, repository: repository, descriptor: descriptor)
    }

    /// The name an image gets in the store, the same one `slipway pull` gives it, so either fills it for the other.
    func storeName(for name: String, tag: String) -> String {
        "\(registry)/\(repository(for: name)):\(tag)"
    }
}

/// The upstreams of one server: the default one, and others chosen with containerd's `?ns=HOST`.
public struct Upstreams: Sendable {
    let primary: Upstream
    private let byRegistry: [String: Upstream]

    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    /// `urls`: `http(s)://HOST[:PORT]`, the first one being the default.
    init(urls: [String], credentials: any CredentialProvider, http: HTTPClient, retry: RetryPolicy, logger: Logger) throws {
        var upstreams: [Upstream] = []
        for url in urls {
            let (registry, plainHTTP) = try Self.parse(url)
            let client = RegistryClient(registry: registry, plainHTTP: plainHTTP, credentials: credentials, http: http, retry: retry, logger: logger)
            upstreams.append(Upstream(registry: registry, client: client))
        }
        guard let first = upstreams.first else { throw ParseError(description: "no upstream given: pass --upstream URL") }
        primary = first
        byRegistry = Dictionary(upstreams.map { ($0.registry, $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// The registry name (`docker.io`, `host:port`) and whether plain HTTP is meant, for an upstream given as
    /// `http(s)://HOST[:PORT]`.
    public static func parse(_ url: String) throws -> (registry: String, plainHTTP: Bool) {
        guard let components = URLComponents(string: url), let scheme = components.scheme, scheme == "http" || scheme == "https",
            let host = components.host, !host.isEmpty
        else { throw ParseError(description: "upstream '\(url)' is not an http:// or https:// URL (e.g. https://registry-1.docker.io)") }
        guard components.path.isEmpty || components.path == "/", components.query == nil else {
            throw ParseError(description: "upstream '\(url)' has a path or query; give the registry's root URL (the API is under /v2/ there)")
        }
        let hostAndPort = components.port.map { "\(host):\($0)" } ?? host
        return (Reference.registryName(forHost: hostAndPort), scheme == "http")
    }

    /// The upstream for a request: `ns` names the registry the client meant (containerd adds it when talking to a
    /// mirror). An `ns` this server does not mirror gets nil, so the client falls back to its next host.
    func upstream(namespace: String?) -> Upstream? {
        guard let namespace, !namespace.isEmpty else { return primary }
        return byRegistry[Reference.registryName(forHost: namespace)]
    }
}
