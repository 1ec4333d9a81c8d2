import Archive
import ArgumentParser
import ContentStore
import Foundation
import Logging
import OCI
import Registry
import Slipway

/// Options every command takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Content store directory (env SLIPWAY_STORE; default /var/lib/slipway for root, else $XDG_CACHE_HOME/slipway).")
    var store: String?

    @Flag(name: .long, help: "Print one machine-readable JSON document on stdout.")
    var json = false

    @Flag(name: .long, help: "Use plain HTTP for registries (implied for localhost and 127.0.0.0/8).")
    var plainHTTP = false

    @Flag(name: .shortAndLong, help: "No progress output.")
    var quiet = false

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String = "warning"

    @Option(name: .long, help: "Platform to select from multi-platform images (default: this machine's).")
    var platform: String?

    @Option(name: .long, help: "Layers transferred at once.")
    var jobs: Int = 4

    @Option(name: .long, help: "Seconds without data before a transfer counts as stalled and is retried.")
    var readTimeout: Int64 = 60

    @Option(name: .long, help: "A PEM file of a certificate authority to trust besides the system's (repeatable).")
    var caCert: [String] = []

    @Option(name: .long, help: "Verify registries' TLS certificates (--tls-verify=false to skip, like skopeo).")
    var tlsVerify: Bool = true

    @Option(name: .long, help: ArgumentHelp(
        "Pull from every registry through this mirror (a `slipway serve` cache, or any registry that takes containerd's ?ns=REGISTRY); pushes go to the registry itself.",
        valueName: "URL"))
    var registryMirror: String?

    @Option(name: .long, help: "Credentials USER:PASSWORD for the source registry of this command (else ~/.docker/config.json).")
    var creds: String?

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown log level '\(logLevel)'") }
        if let platform { _ = try Platform(parsing: platform) }
        guard jobs >= 1 else { throw ValidationError("--jobs must be at least 1") }
        if let creds, !creds.contains(":") { throw ValidationError("--creds takes USER:PASSWORD") }
        if let registryMirror { _ = try RegistryMirror(parsing: registryMirror) }
    }

    var storeRoot: String { store ?? ContentStore.defaultRoot }

    func openStore() throws -> ContentStore { try ContentStore(root: storeRoot) }

    func makeLogger() -> Logger {
        _ = loggingBootstrap
        var logger = Logger(label: "slipway")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .warning
        return logger
    }

    /// `--creds` goes to the first location's registry (the source), `destinationCreds` to the second's, so one
    /// registry's password is never offered to another.
    func makeSession(registries: [ImageLocation] = [], destinationCreds: String? = nil, credentials: (any CredentialProvider)? = nil) throws -> Session {
        var options = Session.Options()
        options.plainHTTP = plainHTTP
        options.concurrency = jobs
        options.readTimeoutSeconds = readTimeout
        options.tls = TLSOptions(caCertificateFiles: caCert, verify: tlsVerify)
        if let platform { options.platform = try Platform(parsing: platform) }
        options.mirror = try registryMirror.map(RegistryMirror.init(parsing:))
        let hosts = registries.map { location -> String? in
            if case .registry(let reference) = location { return reference.registry }
            return nil
        }
        var explicit: [String: Credentials] = [:]
        for (given, host) in zip([creds, destinationCreds], hosts) {
            guard let given, let host, let colon = given.firstIndex(of: ":") else { continue }
            explicit[host] = Credentials(username: String(given[..<colon]), secret: String(given[given.index(after: colon)...]))
        }
        options.credentials = credentials
        if !explicit.isEmpty { options.credentials = OverridingCredentials(explicit: explicit, fallback: try credentials ?? DockerConfigCredentials()) }
        return try Session(options: options, logger: makeLogger())
    }

    /// Runs `body` with a session for these locations and shuts the session down however `body` ends.
    func withSession<T>(
        for locations: [ImageLocation], destinationCreds: String? = nil, credentials: (any CredentialProvider)? = nil, _ body: (Session) async throws -> T
    ) async throws -> T {
        try await makeSession(registries: locations, destinationCreds: destinationCreds, credentials: credentials).run(body)
    }

    func makeProgress() -> ProgressDisplay { ProgressDisplay(enabled: !quiet && !json) }

    /// These options as arguments of another slipway command this one starts (the store, how to reach
    /// registries, the log level); not `--creds`, which would show in the process list.
    var forwarded: [String] {
        var arguments = ["--store", resolvedPath(storeRoot), "--log-level", logLevel, "--read-timeout", String(readTimeout)]
        if plainHTTP { arguments.append("--plain-http") }
        if !tlsVerify { arguments.append("--tls-verify=false") }
        for file in caCert { arguments += ["--ca-cert", resolvedPath(file)] }
        if let platform { arguments += ["--platform", platform] }
        if let registryMirror { arguments += ["--registry-mirror", registryMirror] }
        return arguments
    }
}

func parseLocation(_ text: String) throws -> ImageLocation {
    do {
        return try ImageLocation(parsing: text)
    } catch {
        throw ValidationError("\(error)")
    }
}

/// The two ends of a copy or conversion; a registry destination must name a tag to push to.
func parseTransfer(from source: String, to destination: String) throws -> (ImageLocation, ImageLocation) {
    let to = try parseLocation(destination)
    if case .registry(let reference) = to, reference.digest != nil, reference.tag == nil {
        throw ValidationError("the destination needs a tag, not only a digest")
    }
    return (try parseLocation(source), to)
}

/// Prints a value as the one JSON document on stdout.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    // The throwing write: a reader that went away (`| head`) is EPIPE, not a crash.
    try FileHandle.standardOutput.write(contentsOf: try encoder.encode(value) + Data("\n".utf8))
}

func formatBytes(_ bytes: Int64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1000, unit < units.count - 1 {
        value /= 1000
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
}

/// swift-log allows one bootstrap per process.
private let loggingBootstrap: Void = LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }

/// How far one layer may expand when decompressed, for the commands that extract, cache or convert layers.
struct DecompressionOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Largest uncompressed size of one layer, with an optional K, M, G or T suffix (powers of 1024) (env SLIPWAY_MAX_LAYER_SIZE; default 128G).",
        valueName: "size"))
    var maxLayerSize: String?

    @Option(name: .long, help: ArgumentHelp(
        "Largest uncompressed/compressed ratio of a layer that decompresses to more than 1 GiB (env SLIPWAY_MAX_EXPANSION; default 100).",
        valueName: "ratio"))
    var maxExpansion: String?

    func validate() throws { _ = try limit() }

    /// The options, else the environment, else the defaults.
    func limit(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> DecompressionLimit {
        var limit = DecompressionLimit.standard
        if let text = maxLayerSize ?? environment["SLIPWAY_MAX_LAYER_SIZE"] {
            guard let bytes = Self.parseSize(text), bytes > 0 else {
                throw ValidationError("--max-layer-size / SLIPWAY_MAX_LAYER_SIZE takes a positive size such as 512M or 200G, not '\(text)'")
            }
            limit.absolute = bytes
        }
        if let text = maxExpansion ?? environment["SLIPWAY_MAX_EXPANSION"] {
            guard let ratio = Int64(text), ratio > 0 else {
                throw ValidationError("--max-expansion / SLIPWAY_MAX_EXPANSION takes a positive whole ratio such as 100, not '\(text)'")
            }
            limit.ratio = ratio
        }
        return limit
    }

    /// "1048576", "512K", "64m", "2G", "1T" (also "2GiB", "2GB": powers of 1024 either way); nil if malformed or too big.
    static func parseSize(_ text: String) -> Int64? {
        var digits = Substring(text.trimmingCharacters(in: .whitespaces))
        for unit in ["iB", "B", "ib", "b"] where digits.hasSuffix(unit) && digits.count > unit.count {
            digits = digits.dropLast(unit.count)
            break
        }
        var shift: Int64 = 0
        if let suffix = digits.last, let index = "KMGT".firstIndex(of: Character(suffix.uppercased())) {
            shift = 10 * Int64("KMGT".distance(from: "KMGT".startIndex, to: index) + 1)
            digits = digits.dropLast()
        }
        guard let value = Int64(digits), value >= 0 else { return nil }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: 1 << shift)
        return overflow ? nil : bytes
    }
}

/// Commands that decode layers: `--max-layer-size` and `--max-expansion` apply to every layer they read.
protocol DecompressingCommand {
    var decompression: DecompressionOptions { get }
}

/// Commands that build output in place (an unpack's staging tree, the layer cache, converted blobs): SIGINT and
/// SIGTERM remove what is half built before the process ends. `mount`, `serve` and `run` handle these signals
/// themselves and are not among them.
protocol WritesPartialOutput {}
