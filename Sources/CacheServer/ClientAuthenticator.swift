import CCrypt
import Crypto
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A configuration problem with the client credential files (htpasswd or token file).
public struct ClientAuthError: Error, CustomStringConvertible, Sendable {
    public var description: String

    init(_ description: String) {
        self.description = description
    }
}

/// Who may use the cache server: nobody checked (default), htpasswd basic users, and/or bearer tokens.
///
/// - Basic credentials are checked against an htpasswd file whose hashes must be bcrypt
///   (`$2y$`, `$2b$`, `$2a$`), sha256-crypt (`$5$`), sha512-crypt (`$6$`) or yescrypt (`$y$`),
///   verified with libxcrypt's `crypt_r`. Successful verifications are cached (keyed by the
///   SHA-256 of the whole header value) because bcrypt is deliberately slow; failures never are.
/// - Bearer tokens are read one per line from a token file; only their SHA-256 digests are kept
///   and the presented token's digest is compared in constant time against every one of them.
/// - `authorize` is what a server calls: it verifies hashes on a small pool of its own threads (never on an
///   event loop or the concurrency pool), and a client whose credentials failed too often lately is answered at
///   once without spending any hashing time on it.
public struct ClientAuthenticator: Sendable {
    /// Allows every request; no credentials are checked.
    public static let open = ClientAuthenticator(users: [:], tokenDigests: [])

    /// Maximum number of remembered successful Basic verifications before the cache is flushed.
    static let verifiedCacheLimit = 1024

    private static let realm = "slipway"

    /// user → stored crypt(3) hash.
    private let users: [String: String]
    /// A stored hash used to spend comparable time when the user is unknown (no user enumeration by timing).
    private let decoyHash: String?
    /// SHA-256 digests of the accepted bearer tokens.
    private let tokenDigests: [[UInt8]]
    private let verified: VerifiedCache
    let failures: AuthFailureThrottle
    private let hashing: HashingQueue

    /// Number of remembered successful Basic verifications (for tests).
    var cachedVerificationCount: Int { verified.count }

    private init(users: [String: String], tokenDigests: [[UInt8]], failures: AuthFailureThrottle = AuthFailureThrottle()) {
        self.users = users
        self.decoyHash = users.keys.sorted().first.flatMap { users[$0] }
        self.tokenDigests = tokenDigests
        self.verified = VerifiedCache(limit: Self.verifiedCacheLimit)
        self.failures = failures
        self.hashing = HashingQueue()
    }

    /// Loads the given credential files. With neither file, the result allows everything (like `open`).
    public init(htpasswdFile: String? = nil, tokenFile: String? = nil) throws {
        try self.init(htpasswdFile: htpasswdFile, tokenFile: tokenFile, failures: AuthFailureThrottle())
    }

    init(htpasswdFile: String? = nil, tokenFile: String? = nil, failures: AuthFailureThrottle) throws {
        let users = try htpasswdFile.map(Self.loadHtpasswd) ?? [:]
        let tokens = try tokenFile.map(Self.loadTokens) ?? []
        self.init(users: users, tokenDigests: tokens, failures: failures)
    }

    /// Whether any credentials are required.
    public var isEnabled: Bool { !users.isEmpty || !tokenDigests.isEmpty }

    public enum Decision: Sendable, Equatable {
        /// `user` is the htpasswd user for Basic credentials; nil for bearer tokens or when auth is disabled.
        case allowed(user: String?)
        case denied(reason: String)
        /// Too many failures from this client lately, or too many verifications waiting: try again later.
        case throttled(retryAfterSeconds: Int, reason: String)
    }

    /// Decides about a request from `client` (its address, as the unit failures are counted by). A Basic
    /// credential verified lately is allowed at once, even from a throttled client; anything else from a throttled
    /// client is refused without being verified. Hashes are verified on `HashingQueue`'s threads.
    public func authorize(authorization: String?, client: String, now: ContinuousClock.Instant = .now) async -> Decision {
        guard isEnabled else { return .allowed(user: nil) }
        guard let header = authorization?.trimmingCharacters(in: .whitespaces), !header.isEmpty else {
            return .denied(reason: "no credentials")
        }
        if let user = verified.lookup(Self.verificationKey(header)) { return .allowed(user: user) }
        if let wait = failures.retryAfter(client: client, now: now) {
            return .throttled(retryAfterSeconds: wait, reason: "too many failed authentication attempts from \(client); retry in \(wait) s")
        }
        let decision: Decision
        if header.lowercased().hasPrefix("basic"), !users.isEmpty {
            guard let verifiedDecision = await hashing.run({ [self] in check(authorization: header) }) else {
                return .throttled(retryAfterSeconds: 1, reason: "too many authentication attempts are being verified; retry in 1 s")
            }
            decision = verifiedDecision
        } else {
            decision = check(authorization: header)
        }
        if case .denied = decision { failures.recordFailure(client: client, now: now) }
        return decision
    }

    private static func verificationKey(_ header: String) -> [UInt8] {
        Array(SHA256.hash(data: Array(header.utf8)))
    }

    /// Value for WWW-Authenticate on a 401: `Basic realm="slipway"` when htpasswd users exist, else `Bearer realm="slipway"`.
    public var challenge: String {
        users.isEmpty ? "Bearer realm=\"\(Self.realm)\"" : "Basic realm=\"\(Self.realm)\""
    }

    /// `authorization`: the request's Authorization header value, or nil.
    public func check(authorization: String?) -> Decision {
        guard isEnabled else { return .allowed(user: nil) }
        guard let header = authorization?.trimmingCharacters(in: .whitespaces), !header.isEmpty else {
            return .denied(reason: "no credentials")
        }
        let scheme: Substring
        let credentials: String
        if let space = header.firstIndex(where: { $0 == " " || $0 == "\t" }) {
            scheme = header[..<space]
            credentials = header[space...].trimmingCharacters(in: .whitespaces)
        } else {
            scheme = Substring(header)
            credentials = ""
        }
        switch scheme.lowercased() {
        case "basic":
            return checkBasic(header: header, credentials: credentials)
        case "bearer":
            return checkBearer(credentials)
        default:
            return .denied(reason: "unsupported authorization scheme '\(scheme.prefix(32))'")
        }
    }

    // MARK: - Basic

    private func checkBasic(header: String, credentials: String) -> Decision {
        guard !users.isEmpty else { return .denied(reason: "basic authentication is not enabled") }
        guard !credentials.isEmpty else { return .denied(reason: "malformed basic credentials: empty") }
        guard let decoded = Data(base64Encoded: credentials) else {
            return .denied(reason: "malformed basic credentials: invalid base64")
        }
        let bytes = [UInt8](decoded)
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else {
            return .denied(reason: "malformed basic credentials: missing ':'")
        }
        guard let user = String(validating: bytes[..<colon], as: UTF8.self), !user.isEmpty else {
            return .denied(reason: "malformed basic credentials: bad user name")
        }
        let password = Array(bytes[(colon + 1)...])
        guard !password.contains(0) else {
            return .denied(reason: "malformed basic credentials: NUL in password")
        }

        let key = Self.verificationKey(header)
        if let cached = verified.lookup(key), cached == user {
            return .allowed(user: user)
        }

        guard let hash = users[user] else {
            // Spend about as long as a real verification so unknown users aren't revealed by timing.
            if let decoyHash { _ = Self.cryptVerify(password: password, hash: decoyHash) }
            return .denied(reason: "invalid user name or password")
        }
        guard Self.cryptVerify(password: password, hash: hash) else {
            return .denied(reason: "invalid user name or password")
        }
        verified.insert(key, user: user)
        return .allowed(user: user)
    }

    /// Runs `crypt_r(password, hash)` and compares the result with `hash` in constant time.
    static func cryptVerify(password: [UInt8], hash: String) -> Bool {
        // struct crypt_data is 32 KiB: keep it off the stack, zeroed as libxcrypt requires.
        guard let raw = calloc(1, MemoryLayout<crypt_data>.size) else { return false }
        defer {
            memset(raw, 0, MemoryLayout<crypt_data>.size)  // don't leave key material lying around
            free(raw)
        }
        let data = raw.bindMemory(to: crypt_data.self, capacity: 1)
        var phrase = password.map { CChar(bitPattern: $0) }
        phrase.append(0)
        defer { for i in phrase.indices { phrase[i] = 0 } }
        let expected = Array(hash.utf8)
        let matched: Bool = phrase.withUnsafeBufferPointer { phrasePointer in
            hash.withCString { setting in
                guard let out = crypt_r(phrasePointer.baseAddress, setting, data) else { return false }
                let length = strlen(out)
                // libxcrypt signals failure with a string starting with '*'.
                guard length > 0, out[0] != CChar(UInt8(ascii: "*")) else { return false }
                let produced = UnsafeRawBufferPointer(start: out, count: length)
                return constantTimeEqual(produced, expected)
            }
        }
        return matched
    }

    // MARK: - Bearer

    private func checkBearer(_ token: String) -> Decision {
        guard !tokenDigests.isEmpty else { return .denied(reason: "bearer tokens are not enabled") }
        guard !token.isEmpty else { return .denied(reason: "malformed bearer credentials: empty token") }
        let digest = Array(SHA256.hash(data: Array(token.utf8)))
        var found = false
        for candidate in tokenDigests {
            // Check every token, without short-circuiting, so timing doesn't reveal which matched.
            let equal = digest.withUnsafeBytes { constantTimeEqual($0, candidate) }
            found = found || equal
        }
        return found ? .allowed(user: nil) : .denied(reason: "invalid bearer token")
    }

    // MARK: - Loading

    private static let acceptedPrefixes = ["$2y$", "$2b$", "$2a$", "$5$", "$6$", "$y$"]

    static func loadHtpasswd(path: String) throws -> [String: String] {
        let text = try readTextFile(path, what: "htpasswd file")
        var users: [String: String] = [:]
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNumber = index + 1
            let line = rawLine.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":") else {
                throw ClientAuthError("htpasswd file \(path) line \(lineNumber): expected 'user:hash'")
            }
            let user = String(line[..<colon])
            let hash = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            guard !user.isEmpty else {
                throw ClientAuthError("htpasswd file \(path) line \(lineNumber): empty user name")
            }
            guard acceptedPrefixes.contains(where: { hash.hasPrefix($0) }) else {
                let scheme: String
                if hash.hasPrefix("$apr1$") {
                    scheme = "Apache MD5 ($apr1$)"
                } else if hash.hasPrefix("{SHA}") {
                    scheme = "unsalted SHA-1 ({SHA})"
                } else if hash.hasPrefix("$1$") {
                    scheme = "MD5-crypt ($1$)"
                } else if hash.hasPrefix("$") {
                    let id = hash.dropFirst().prefix(while: { $0 != "$" }).prefix(16)
                    scheme = "unknown scheme '$\(id)$'"
                } else {
                    scheme = "DES crypt or plaintext"
                }
                throw ClientAuthError(
                    "htpasswd file \(path) line \(lineNumber): user '\(user)' has an unsupported password hash "
                        + "(\(scheme)); supported are bcrypt ($2y$/$2b$/$2a$), sha256-crypt ($5$), "
                        + "sha512-crypt ($6$) and yescrypt ($y$). Regenerate it with `htpasswd -B \(path) \(user)` (bcrypt)")
            }
            // libxcrypt reports sha256-crypt as CRYPT_SALT_METHOD_LEGACY; the prefix list above already
            // decides which schemes are acceptable, so only reject settings it cannot use.
            let saltCheck = crypt_checksalt(hash)
            guard saltCheck != CRYPT_SALT_INVALID, saltCheck != CRYPT_SALT_METHOD_DISABLED,
                hasWellFormedChecksum(hash)
            else {
                throw ClientAuthError(
                    "htpasswd file \(path) line \(lineNumber): user '\(user)' has a malformed password hash; "
                        + "regenerate it with `htpasswd -B \(path) \(user)` (bcrypt)")
            }
            guard users[user] == nil else {
                throw ClientAuthError("htpasswd file \(path) line \(lineNumber): user '\(user)' is listed twice")
            }
            users[user] = hash
        }
        guard !users.isEmpty else {
            throw ClientAuthError("htpasswd file \(path) contains no users")
        }
        return users
    }

    /// `crypt_checksalt` only validates the setting part; also make sure the stored checksum has the
    /// length the scheme produces, so a truncated line fails at load instead of denying everyone later.
    static func hasWellFormedChecksum(_ hash: String) -> Bool {
        let fields = hash.split(separator: "$", omittingEmptySubsequences: false)
        guard fields.count >= 4, fields[0].isEmpty, let checksum = fields.last else { return false }
        let alphabet = Set("./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        guard checksum.allSatisfy({ alphabet.contains($0) }) else { return false }
        switch fields[1] {
        case "2a", "2b", "2y": return fields.count == 4 && checksum.count == 22 + 31  // salt + hash
        case "5": return checksum.count == 43
        case "6": return checksum.count == 86
        case "y": return fields.count == 5 && checksum.count == 43
        default: return false
        }
    }

    static let minimumTokenLength = 16

    static func loadTokens(path: String) throws -> [[UInt8]] {
        let text = try readTextFile(path, what: "token file")
        var digests: [[UInt8]] = []
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNumber = index + 1
            let token = rawLine.trimmingCharacters(in: .whitespacesAndNewlines)
            if token.isEmpty || token.hasPrefix("#") { continue }
            guard token.count >= minimumTokenLength else {
                throw ClientAuthError(
                    "token file \(path) line \(lineNumber): token is \(token.count) characters; "
                        + "at least \(minimumTokenLength) are required")
            }
            guard !token.contains(where: { $0.isWhitespace }) else {
                throw ClientAuthError("token file \(path) line \(lineNumber): token contains whitespace")
            }
            digests.append(Array(SHA256.hash(data: Array(token.utf8))))
        }
        guard !digests.isEmpty else {
            throw ClientAuthError("token file \(path) contains no tokens")
        }
        return digests
    }
}

/// Reads a whole file as UTF-8 text, reporting errors with the path and errno text.
private func readTextFile(_ path: String, what: String) throws -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
        throw ClientAuthError("cannot read \(what) \(path): \(String(cString: strerror(errno)))")
    }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 16384)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw ClientAuthError("cannot read \(what) \(path): \(String(cString: strerror(errno)))")
        }
        if n == 0 { break }
        bytes.append(contentsOf: buffer[..<n])
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// Compares two byte sequences without data-dependent early exit (length mismatch returns false immediately;
/// lengths here are not secret: hash formats and digests have fixed, public lengths).
private func constantTimeEqual<B: Collection>(_ a: UnsafeRawBufferPointer, _ b: B) -> Bool where B.Element == UInt8 {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for (x, y) in zip(a, b) { difference |= x ^ y }
    return difference == 0
}

/// Bounded memo of successful Basic verifications: SHA-256(header value) → user.
final class VerifiedCache: Sendable {
    private let entries: Mutex<[[UInt8]: String]>
    private let limit: Int

    init(limit: Int) {
        self.limit = limit
        self.entries = Mutex([:])
    }

    func lookup(_ key: [UInt8]) -> String? {
        entries.withLock { $0[key] }
    }

    var count: Int { entries.withLock { $0.count } }

    func insert(_ key: [UInt8], user: String) {
        entries.withLock { entries in
            if entries.count >= limit { entries.removeAll(keepingCapacity: true) }
            entries[key] = user
        }
    }
}

/// Counts failed authentications per client in fixed windows: after `maxFailures` in one window the client is
/// refused until the window ends. Holds at most `capacity` clients, so a flood of addresses cannot grow it.
final class AuthFailureThrottle: Sendable {
    private struct Record {
        var windowStart: ContinuousClock.Instant
        var failures: Int
    }

    let maxFailures: Int
    let window: Duration
    let capacity: Int
    private let records = Mutex<[String: Record]>([:])

    init(maxFailures: Int = 5, window: Duration = .seconds(60), capacity: Int = 10_000) {
        self.maxFailures = maxFailures
        self.window = window
        self.capacity = capacity
    }

    /// Whole seconds (at least 1) until `client` may try again, or nil when it may now.
    func retryAfter(client: String, now: ContinuousClock.Instant) -> Int? {
        records.withLock { records in
            guard let record = records[client], record.failures >= maxFailures else { return nil }
            let remaining = record.windowStart + window - now
            guard remaining > .zero else { return nil }
            return max(1, Int(remaining.components.seconds) + (remaining.components.attoseconds > 0 ? 1 : 0))
        }
    }

    func recordFailure(client: String, now: ContinuousClock.Instant) {
        records.withLock { records in
            if var record = records[client], now - record.windowStart < window {
                record.failures += 1
                records[client] = record
                return
            }
            if records[client] == nil, records.count >= capacity {
                records = records.filter { now - $0.value.windowStart < window }
                if records.count >= capacity, let oldest = records.min(by: { $0.value.windowStart < $1.value.windowStart }) {
                    records.removeValue(forKey: oldest.key)
                }
            }
            records[client] = Record(windowStart: now, failures: 1)
        }
    }

    var trackedClients: Int { records.withLock { $0.count } }
}

/// Where password hashes are verified: `threads` serial dispatch queues (threads of their own, not the event
/// loops nor the concurrency pool, which requests need), taking at most `maxWaiting` verifications at once, so
/// a flood of guesses neither piles up nor starves anyone.
final class HashingQueue: Sendable {
    private let queues: [DispatchQueue]
    private let maxWaiting: Int
    private let state = Mutex((waiting: 0, next: 0))

    init(threads: Int = 2, maxWaiting: Int = 32) {
        queues = (0..<threads).map { DispatchQueue(label: "slipway.auth-hashing.\($0)") }
        self.maxWaiting = maxWaiting
    }

    /// `work`'s result, or nil when too many verifications are waiting already.
    func run<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T? {
        let queue: DispatchQueue? = state.withLock { state in
            guard state.waiting < maxWaiting else { return nil }
            state.waiting += 1
            state.next = (state.next + 1) % queues.count
            return queues[state.next]
        }
        guard let queue else { return nil }
        return await withCheckedContinuation { continuation in
            queue.async {
                let result = work()
                self.state.withLock { $0.waiting -= 1 }
                continuation.resume(returning: result)
            }
        }
    }
}
