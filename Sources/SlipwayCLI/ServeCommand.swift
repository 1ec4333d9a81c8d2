import ArgumentParser
import CacheServer
import ContentStore
import Foundation
import Registry

#if canImport(Glibc)
import Glibc
#endif

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a pull-through cache registry for a cluster (read-only distribution API over the store).",
        discussion: """
            Clients pull from this server as from any registry; whatever is missing is fetched from the upstream \
            once, however many clients ask at the same time, and streamed to all of them as it arrives. Range \
            requests work on blobs not cached yet, so lazy mounts can go through the cache. Tags are served from \
            the store for --tag-ttl seconds, then checked upstream with HEAD. Point containerd at it with a \
            hosts.toml (see the README); several upstreams can share one server through containerd's ?ns= \
            parameter. Metrics are at /metrics (behind the same authentication as the registry API unless \
            --metrics-public); one JSON line per request goes to --access-log.

            Hostile or broken clients are bounded: a request must arrive within --header-timeout of its first \
            byte, a connection waiting for a request is closed after --idle-timeout, and beyond \
            --max-connections a new connection replaces the longest idle one, or gets a 503 when none is idle. \
            The server raises its open-file limit to the hard limit at start. After 5 failed logins within a \
            minute a client address gets 429 until the minute is over.

            With --index, every plain gzip layer the cache fills is indexed on the way in (a gzip index, as \
            `slipway index` builds), and every image whose layers have one gets a referrer artifact, answered on \
            the OCI Referrers API and on the fallback tag sha256-HEX: `slipway mount` and `run --mode lazy` \
            through the cache then mount such images lazily, although nobody converted or indexed them.
            """)

    @OptionGroup var global: GlobalOptions
    @Option(name: .long, help: "Upstream registry URL, e.g. https://registry-1.docker.io (repeatable; the first answers requests without ?ns=).")
    var upstream: [String] = []
    @Option(name: .long, help: "Address to listen on, HOST:PORT (0.0.0.0:PORT for every interface).") var listen = "127.0.0.1:5050"
    @Option(name: .long, help: "Store directory to serve and fill (default: the --store).") var root: String?
    @Option(name: .long, help: "Seconds a tag is served from the store before it is revalidated upstream.") var tagTTL: Double = 300
    @Option(name: .long, help: "Size limit of the store's blobs (e.g. 50G, 500M); least recently used blobs go first.") var maxSize: String?
    @Option(name: .long, help: "Seconds an upstream transfer may send nothing before its waiting clients get an error.")
    var upstreamTimeout: Double = 30
    @Option(name: .long, help: "Require HTTP basic auth from clients; FILE as written by `htpasswd -B`.") var htpasswd: String?
    @Option(name: .long, help: "Require a bearer token from clients; FILE holds one token per line.") var tokenFile: String?
    @Option(name: .long, help: "Where to write one JSON line per request: a file, - for stderr, or none.") var accessLog = "-"
    @Option(name: .long, help: "Seconds within which a request (head and any body) must arrive once its first byte has.")
    var headerTimeout: Double = 10
    @Option(name: .long, help: "Seconds a connection may wait for its next request without sending a byte before it is closed.")
    var idleTimeout: Double = 60
    @Option(
        name: .long,
        help: "Connections held at once (default: derived from the open-file limit, leaving room for store files and upstream connections).")
    var maxConnections: Int?
    @Flag(name: .long, help: "Build a gzip index of every plain gzip layer filled and serve it as the image's referrer.") var index = false
    @Flag(name: .long, help: "Answer /metrics without credentials even when --htpasswd or --token-file is given.") var metricsPublic = false

    func validate() throws {
        guard !upstream.isEmpty else { throw ValidationError("give the registry to mirror with --upstream URL") }
        for url in upstream {
            do { _ = try Upstreams.parse(url) } catch { throw ValidationError("\(error)") }
        }
        guard tagTTL >= 0 else { throw ValidationError("--tag-ttl must not be negative") }
        guard upstreamTimeout >= 1 else { throw ValidationError("--upstream-timeout must be at least 1 second") }
        for (name, value) in [("--header-timeout", headerTimeout), ("--idle-timeout", idleTimeout)] {
            guard value >= 0.1, value <= 86400 else { throw ValidationError("\(name) takes seconds between 0.1 and 86400") }
        }
        if let maxConnections, maxConnections < 1 { throw ValidationError("--max-connections must be at least 1") }
        _ = try listenAddress()
        if let maxSize { _ = try Self.parseSize(maxSize) }
    }

    func listenAddress() throws -> (host: String, port: Int) {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port) else {
            throw ValidationError("--listen takes HOST:PORT, e.g. 0.0.0.0:5050")
        }
        var host = String(listen[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }

    static func parseSize(_ text: String) throws -> Int64 {
        let units: [Character: Int64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var digits = Substring(text.uppercased())
        if digits.hasSuffix("B") || digits.hasSuffix("I") { digits = digits.dropLast() }
        if digits.hasSuffix("I") { digits = digits.dropLast() }
        var multiplier: Int64 = 1
        if let last = digits.last, let unit = units[last] {
            multiplier = unit
            digits = digits.dropLast()
        }
        guard let value = Double(digits), value > 0 else { throw ValidationError("'\(text)' is not a size such as 50G or 500M") }
        return Int64(value * Double(multiplier))
    }

    func run() async throws {
        let store = try ContentStore(root: root ?? global.storeRoot)
        var configuration = CacheServer.Configuration(upstreams: upstream)
        configuration.tagTTL = .milliseconds(Int64(tagTTL * 1000))
        configuration.upstreamStallTimeout = .milliseconds(Int64(upstreamTimeout * 1000))
        configuration.maxStoreBytes = try maxSize.map(Self.parseSize)
        configuration.authenticator = try ClientAuthenticator(htpasswdFile: htpasswd, tokenFile: tokenFile)
        configuration.metricsPublic = metricsPublic
        configuration.buildGzipIndexes = index
        let fileLimit = try FileDescriptorLimit.raiseSoftLimitToHard()
        let safeConnections = ConnectionLimits.defaultMaxConnections(fileDescriptorLimit: fileLimit)
        var limits = ConnectionLimits(maxConnections: maxConnections ?? safeConnections)
        limits.headerTimeout = .milliseconds(Int64(headerTimeout * 1000))
        limits.idleTimeout = .milliseconds(Int64(idleTimeout * 1000))
        configuration.connectionLimits = limits
        var credentials: any CredentialProvider = try DockerConfigCredentials()
        if let creds = global.creds, let colon = creds.firstIndex(of: ":") {
            let registry = try Upstreams.parse(upstream[0]).registry
            let given = Credentials(username: String(creds[..<colon]), secret: String(creds[creds.index(after: colon)...]))
            credentials = OverridingCredentials(explicit: [registry: given], fallback: credentials)
        }
        let log = accessLog == "none" ? nil : try AccessLog(path: accessLog)
        let server = try CacheServer(store: store, configuration: configuration, credentials: credentials, logger: global.makeLogger(), accessLog: log)
        let (host, port) = try listenAddress()
        let signals = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { Task { await server.stop() } }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        let upstreams = upstream.joined(separator: ", ")
        try await server.run(host: host, port: port) { [limits, safeConnections, fileLimit] boundHost, boundPort in
            FileHandle.standardError.write(Data("slipway serve: listening on http://\(boundHost):\(boundPort), mirroring \(upstreams), store \(store.root), at most \(limits.maxConnections) connections\n".utf8))
            if limits.maxConnections > safeConnections {
                FileHandle.standardError.write(
                    Data("slipway serve: warning: --max-connections \(limits.maxConnections) can exhaust the open-file limit of \(fileLimit) (\(safeConnections) cannot); new connections then wait\n".utf8))
            }
        }
        FileHandle.standardError.write(Data("slipway serve: stopped\n".utf8))
    }
}
