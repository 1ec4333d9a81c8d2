import Blocking
import Foundation

/// A username and secret for a registry. An empty username with a secret is an identity token (OAuth2 refresh token).
public struct Credentials: Sendable, Equatable {
    public var username: String
    public var secret: String

    public init(username: String, secret: String) {
        self.username = username
        self.secret = secret
    }

    var basicHeader: String { "Basic " + Data("\(username):\(secret)".utf8).base64EncodedString() }
}

/// Finds credentials for a registry host the way Docker does: `credHelpers[host]`, then `credsStore`, then `auths`.
public protocol CredentialProvider: Sendable {
    func credentials(for registry: String) async throws -> Credentials?
}

/// Credentials from `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`) and `docker-credential-*` helpers.
public struct DockerConfigCredentials: CredentialProvider {
    struct ConfigFile: Decodable {
        struct AuthEntry: Decodable {
            var auth: String?
            var username: String?
            var password: String?
            var identitytoken: String?
        }
        var auths: [String: AuthEntry]?
        var credsStore: String?
        var credHelpers: [String: String]?
    }

    public let path: String
    private let config: ConfigFile?
    /// Whether `credHelpers` and `credsStore` are run. A root process reading another user's file must not: the
    /// file would choose a program for it to run.
    private let runsHelpers: Bool

    /// Reads the config now; a missing file means anonymous access, a malformed one is an error.
    public init(path: String? = nil) throws {
        let environment = ProcessInfo.processInfo.environment
        let resolved = path
            ?? environment["DOCKER_CONFIG"].map { "\($0)/config.json" }
            ?? "\(environment["HOME"] ?? NSHomeDirectory())/.docker/config.json"
        try self.init(contents: FileManager.default.contents(atPath: resolved), path: resolved)
    }

    /// A config file's bytes (nil: no file, anonymous access), read by the caller; `path` names it in errors.
    public init(contents: Data?, path: String, runsHelpers: Bool = true) throws {
        self.path = path
        self.runsHelpers = runsHelpers
        config = try contents.map { try Self.parse($0, path: path) }
    }

    static func parse(_ data: Data, path: String) throws -> ConfigFile {
        do {
            return try JSONDecoder().decode(ConfigFile.self, from: data)
        } catch {
            throw RegistryError.credentialHelper(helper: "config", reason: "cannot parse \(path): \(error)")
        }
    }

    /// What a config file's `auths` hold for `registry`, without asking credential helpers: the path the fuzz
    /// targets (Sources/FuzzTargets) take through a hostile config.json.
    package static func storedCredentials(inConfigFile bytes: [UInt8], for registry: String) throws -> Credentials? {
        storedCredentials(in: try parse(Data(bytes), path: "config.json"), for: registry)
    }

    static func storedCredentials(in config: ConfigFile, for registry: String) -> Credentials? {
        for key in lookupKeys(for: registry) {
            if let entry = config.auths?[key] { return decode(entry) }
        }
        return nil
    }

    public func credentials(for registry: String) async throws -> Credentials? {
        guard let config else { return nil }
        let keys = Self.lookupKeys(for: registry)
        guard runsHelpers else { return Self.storedCredentials(in: config, for: registry) }
        if let helpers = config.credHelpers, let helper = keys.lazy.compactMap({ helpers[$0] }).first {
            return try await Self.runHelper(helper, serverURL: keys[0])
        }
        if let store = config.credsStore, !store.isEmpty,
            let found = try await Self.runHelper(store, serverURL: registry == "docker.io" ? "https://index.docker.io/v1/" : registry)
        {
            return found
        }
        return Self.storedCredentials(in: config, for: registry)
    }

    /// Docker Hub's legacy key and URL forms users have in their files.
    static func lookupKeys(for registry: String) -> [String] {
        if registry == "docker.io" {
            return ["docker.io", "https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"]
        }
        return [registry, "https://\(registry)", "http://\(registry)", "https://\(registry)/v1/", "https://\(registry)/v2/"]
    }

    static func decode(_ entry: ConfigFile.AuthEntry) -> Credentials? {
        if let token = entry.identitytoken, !token.isEmpty { return Credentials(username: "", secret: token) }
        if let auth = entry.auth, let data = Data(base64Encoded: auth), let text = String(data: data, encoding: .utf8),
            let colon = text.firstIndex(of: ":")
        {
            return Credentials(username: String(text[..<colon]), secret: String(text[text.index(after: colon)...]))
        }
        if let username = entry.username, let password = entry.password { return Credentials(username: username, secret: password) }
        return nil
    }

    /// Runs `docker-credential-NAME get` with the server URL on stdin (the credential-helper protocol). A helper may
    /// take seconds (it can prompt a keychain or call a cloud API): it is awaited off the cooperative pool.
    static func runHelper(_ name: String, serverURL: String) async throws -> Credentials? {
        let result: ChildCommandResult
        do {
            result = try await ChildCommand(
                "/usr/bin/env", ["docker-credential-\(name)", "get"], standardInput: .bytes(Array(serverURL.utf8))
            ).run()
        } catch {
            throw RegistryError.credentialHelper(helper: name, reason: "cannot start: \(error)")
        }
        if result.status != 0 {
            let message = (result.standardOutputText + result.standardErrorText).trimmingCharacters(in: .whitespacesAndNewlines)
            // The protocol's way of saying "no credentials for this server".
            if message.contains("credentials not found") { return nil }
            if result.status == 127 {
                throw RegistryError.credentialHelper(helper: name, reason: "docker-credential-\(name) is not installed or not on PATH")
            }
            throw RegistryError.credentialHelper(helper: name, reason: message.isEmpty ? "exit \(result.status)" : message)
        }
        struct Answer: Decodable {
            var Username: String
            var Secret: String
        }
        do {
            let answer = try JSONDecoder().decode(Answer.self, from: Data(result.standardOutput))
            return Credentials(username: answer.Username == "<token>" ? "" : answer.Username, secret: answer.Secret)
        } catch {
            throw RegistryError.credentialHelper(helper: name, reason: "unreadable answer: \(error)")
        }
    }
}

/// Credentials given on the command line for some registries, docker's config for the others.
public struct OverridingCredentials: CredentialProvider {
    let explicit: [String: Credentials]
    let fallback: any CredentialProvider
    public init(explicit: [String: Credentials], fallback: any CredentialProvider) {
        self.explicit = explicit
        self.fallback = fallback
    }
    public func credentials(for registry: String) async throws -> Credentials? {
        if let given = explicit[registry] { return given }
        return try await fallback.credentials(for: registry)
    }
}

/// Fixed credentials, as tests use them.
public struct StaticCredentials: CredentialProvider {
    let map: [String: Credentials]
    public init(_ map: [String: Credentials]) { self.map = map }
    public func credentials(for registry: String) async throws -> Credentials? { map[registry] }
}
