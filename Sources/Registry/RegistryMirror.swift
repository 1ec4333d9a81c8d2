import Foundation

/// A registry that serves others' content (a pull-through cache such as `slipway serve`), asked for `REGISTRY/REPO`
/// as `/v2/REPO/…?ns=REGISTRY`: containerd's convention for mirrors, so one mirror serves many registries.
public struct RegistryMirror: Sendable, Equatable, CustomStringConvertible {
    /// Host and port to connect to.
    public let host: String
    public let plainHTTP: Bool

    /// `http://HOST[:PORT]` or `https://HOST[:PORT]`, nothing after the authority.
    public init(parsing url: String) throws {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = components.host, !host.isEmpty, components.path.isEmpty || components.path == "/", components.query == nil,
            components.user == nil
        else {
            throw RegistryError.invalidMirror("'\(url)' is not http(s)://HOST[:PORT] (e.g. http://cache.cluster.local:5050)")
        }
        let bracketed = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        self.host = components.port.map { "\(bracketed):\($0)" } ?? bracketed
        plainHTTP = scheme == "http"
    }

    public var description: String { "\(plainHTTP ? "http" : "https")://\(host)" }
}
