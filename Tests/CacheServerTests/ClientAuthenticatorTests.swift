import Foundation
import Testing
import TestSupport

@testable import CacheServer

/// A temporary directory removed when the test's closure returns.
private func withTemporaryDirectory<T>(_ body: (URL) async throws -> T) async throws -> T {
    let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("slipway-client-auth-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    return try await body(directory)
}

/// Writes an htpasswd file with two bcrypt users: alice/wonderland and bob/builder-secret.
private func makeBcryptFile(in directory: URL) async throws -> String {
    let path = directory.appendingPathComponent("htpasswd").path
    try await runChecked("/usr/bin/htpasswd", ["-B", "-b", "-c", path, "alice", "wonderland"])
    try await runChecked("/usr/bin/htpasswd", ["-B", "-b", path, "bob", "builder-secret"])
    return path
}

private func basic(_ user: String, _ password: String, scheme: String = "Basic") -> String {
    "\(scheme) " + Data("\(user):\(password)".utf8).base64EncodedString()
}

private func write(_ text: String, to directory: URL, name: String) throws -> String {
    let url = directory.appendingPathComponent(name)
    try Data(text.utf8).write(to: url)
    return url.path
}

private let goodToken = "0123456789abcdef-slipway-token"
private let otherToken = "fedcba9876543210-other-token"

private func isDenied(_ decision: ClientAuthenticator.Decision) -> Bool {
    if case .denied = decision { return true }
    return false
}

@Suite(.tags(.unit)) struct ClientAuthenticatorTests {
    @Test func openAllowsEverything() {
        let auth = ClientAuthenticator.open
        #expect(!auth.isEnabled)
        #expect(auth.check(authorization: nil) == .allowed(user: nil))
        #expect(auth.check(authorization: "Basic garbage!!") == .allowed(user: nil))
    }

    @Test func noFilesIsOpen() throws {
        let auth = try ClientAuthenticator()
        #expect(!auth.isEnabled)
        #expect(auth.check(authorization: nil) == .allowed(user: nil))
    }

    @Test func rightPasswordAllowed() async throws {
        try await withTemporaryDirectory { directory in
            let path = try await makeBcryptFile(in: directory)
            #expect(try String(contentsOfFile: path, encoding: .utf8).contains("alice:$2y$"))
            let auth = try ClientAuthenticator(htpasswdFile: path)
            #expect(auth.isEnabled)
            #expect(auth.check(authorization: basic("alice", "wonderland")) == .allowed(user: "alice"))
            #expect(auth.check(authorization: basic("bob", "builder-secret")) == .allowed(user: "bob"))
            // The scheme is case-insensitive.
            #expect(auth.check(authorization: basic("bob", "builder-secret", scheme: "bAsIc")) == .allowed(user: "bob"))
        }
    }

    @Test func wrongPasswordDenied() async throws {
        try await withTemporaryDirectory { directory in
            let auth = try await ClientAuthenticator(htpasswdFile: try makeBcryptFile(in: directory))
            #expect(isDenied(auth.check(authorization: basic("alice", "wonderlan"))))
            #expect(isDenied(auth.check(authorization: basic("alice", ""))))
            // bob's password is not alice's.
            #expect(isDenied(auth.check(authorization: basic("alice", "builder-secret"))))
        }
    }

    @Test func unknownUserDenied() async throws {
        try await withTemporaryDirectory { directory in
            let auth = try await ClientAuthenticator(htpasswdFile: try makeBcryptFile(in: directory))
            #expect(isDenied(auth.check(authorization: basic("mallory", "wonderland"))))
            #expect(isDenied(auth.check(authorization: basic("", "wonderland"))))
        }
    }

    @Test func cachedVerificationStillRejectsOtherPasswords() async throws {
        try await withTemporaryDirectory { directory in
            let auth = try await ClientAuthenticator(htpasswdFile: try makeBcryptFile(in: directory))
            let good = basic("alice", "wonderland")
            for _ in 0..<3 {
                #expect(auth.check(authorization: good) == .allowed(user: "alice"))
            }
            #expect(auth.cachedVerificationCount == 1)
            #expect(isDenied(auth.check(authorization: basic("alice", "wonderland2"))))
            #expect(isDenied(auth.check(authorization: basic("alice", "Wonderland"))))
            #expect(isDenied(auth.check(authorization: basic("mallory", "wonderland"))))
            #expect(auth.cachedVerificationCount == 1)  // failures are never cached
            #expect(auth.check(authorization: good) == .allowed(user: "alice"))
            #expect(auth.check(authorization: basic("bob", "builder-secret")) == .allowed(user: "bob"))
            #expect(auth.cachedVerificationCount == 2)
        }
    }

    @Test func verifiedCacheIsBounded() {
        let cache = VerifiedCache(limit: 4)
        for i in 0..<4 { cache.insert([UInt8(i)], user: "u\(i)") }
        #expect(cache.count == 4)
        #expect(cache.lookup([2]) == "u2")
        cache.insert([9], user: "u9")  // full: everything is dropped, then the new entry kept
        #expect(cache.count == 1)
        #expect(cache.lookup([2]) == nil)
        #expect(cache.lookup([9]) == "u9")
    }

    @Test func concurrentChecks() async throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("slipway-client-auth-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let auth = try await ClientAuthenticator(htpasswdFile: try makeBcryptFile(in: directory))
        let results = await withTaskGroup(of: Bool.self) { group in
            for i in 0..<32 {
                group.addTask {
                    if i % 4 == 3 {
                        return isDenied(auth.check(authorization: basic("bob", "nope-\(i)")))
                    }
                    let (user, password) = i % 2 == 0 ? ("alice", "wonderland") : ("bob", "builder-secret")
                    return auth.check(authorization: basic(user, password)) == .allowed(user: user)
                }
            }
            var all: [Bool] = []
            for await result in group { all.append(result) }
            return all
        }
        #expect(results.count == 32)
        #expect(results.allSatisfy { $0 })
    }

    @Test func missingHeaderDenied() async throws {
        try await withTemporaryDirectory { directory in
            let auth = try await ClientAuthenticator(htpasswdFile: try makeBcryptFile(in: directory))
            #expect(auth.check(authorization: nil) == .denied(reason: "no credentials"))
            #expect(auth.check(authorization: "   ") == .denied(reason: "no credentials"))
        }
    }

    @Test func malformedHeadersDenied() async throws {
        try await withTemporaryDirectory { directory in
            let auth = try await ClientAuthenticator(htpasswdFile: try makeBcryptFile(in: directory))
            #expect(isDenied(auth.check(authorization: "Basic not*base64!")))
            #expect(isDenied(auth.check(authorization: "Basic")))
            // Valid base64 but no ':' separator.
            #expect(isDenied(auth.check(authorization: "Basic " + Data("alicewonderland".utf8).base64EncodedString())))
            #expect(isDenied(auth.check(authorization: "Digest username=\"alice\"")))
            // Bearer is not enabled with only an htpasswd file.
            #expect(isDenied(auth.check(authorization: "Bearer \(goodToken)")))
            if case .denied(let reason) = auth.check(authorization: "Basic not*base64!") {
                #expect(reason.contains("base64"))
            }
        }
    }

    @Test func bearerTokens() async throws {
        try await withTemporaryDirectory { directory in
            let path = try write(
                "# cache clients\n\n  \(goodToken)  \n\(otherToken)\r\n", to: directory, name: "tokens")
            let auth = try ClientAuthenticator(tokenFile: path)
            #expect(auth.isEnabled)
            #expect(auth.check(authorization: "Bearer \(goodToken)") == .allowed(user: nil))
            #expect(auth.check(authorization: "bearer \(otherToken)") == .allowed(user: nil))
            #expect(isDenied(auth.check(authorization: "Bearer \(goodToken)x")))
            #expect(isDenied(auth.check(authorization: "Bearer wrong-token-wrong-token")))
            #expect(isDenied(auth.check(authorization: "Bearer")))
            #expect(isDenied(auth.check(authorization: "Bearer # cache clients")))
            // Basic is not enabled with only a token file.
            #expect(isDenied(auth.check(authorization: basic("alice", "wonderland"))))
            #expect(auth.check(authorization: nil) == .denied(reason: "no credentials"))
        }
    }

    @Test func shortTokenRejectedAtLoad() async throws {
        try await withTemporaryDirectory { directory in
            let path = try write("# tokens\n\(goodToken)\nshort-token\n", to: directory, name: "tokens")
            let error = #expect(throws: ClientAuthError.self) { try ClientAuthenticator(tokenFile: path) }
            #expect(error?.description.contains(path) == true)
            #expect(error?.description.contains("line 3") == true)
        }
    }

    @Test func emptyFilesRejected() async throws {
        try await withTemporaryDirectory { directory in
            let empty = try write("# nobody yet\n\n", to: directory, name: "empty")
            #expect(throws: ClientAuthError.self) { try ClientAuthenticator(htpasswdFile: empty) }
            #expect(throws: ClientAuthError.self) { try ClientAuthenticator(tokenFile: empty) }
        }
    }

    @Test func unreadableFileNamesPathAndErrno() async throws {
        try await withTemporaryDirectory { directory in
            let missing = directory.appendingPathComponent("does-not-exist").path
            let error = #expect(throws: ClientAuthError.self) { try ClientAuthenticator(htpasswdFile: missing) }
            #expect(error?.description.contains(missing) == true)
            #expect(error?.description.contains("No such file or directory") == true)
        }
    }

    @Test func apr1RejectedWithLineNumber() async throws {
        try await withTemporaryDirectory { directory in
            let path = try await makeBcryptFile(in: directory)  // lines 1-2: bcrypt
            try await runChecked("/usr/bin/htpasswd", ["-m", "-b", path, "carol", "md5-password"])  // line 3: $apr1$
            #expect(try String(contentsOfFile: path, encoding: .utf8).contains("carol:$apr1$"))
            let error = #expect(throws: ClientAuthError.self) { try ClientAuthenticator(htpasswdFile: path) }
            let message = error?.description ?? ""
            #expect(message.contains(path))
            #expect(message.contains("line 3"))
            #expect(message.contains("carol"))
            #expect(message.contains("htpasswd -B"))
            #expect(message.contains("$apr1$"))
        }
    }

    /// {SHA} (-s), DES crypt (-d) and plaintext (-p) are refused too.
    @Test(arguments: ["-s", "-d", "-p"])
    func weakSchemesRejected(flag: String) async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.appendingPathComponent("htpasswd").path
            try await runChecked("/usr/bin/htpasswd", [flag, "-b", "-c", path, "dave", "password"])
            let error = #expect(throws: ClientAuthError.self) { try ClientAuthenticator(htpasswdFile: path) }
            #expect(error?.description.contains("line 1") == true)
            #expect(error?.description.contains("dave") == true)
            #expect(error?.description.contains("htpasswd -B") == true)
        }
    }

    @Test func malformedBcryptHashRejected() async throws {
        try await withTemporaryDirectory { directory in
            let path = try write("eve:$2y$05$tooshort\n", to: directory, name: "htpasswd")
            #expect(throws: ClientAuthError.self) { try ClientAuthenticator(htpasswdFile: path) }
        }
    }

    /// Other crypt(3) schemes libxcrypt supports (hashes of "correct horse" made with libxcrypt's crypt).
    @Test(arguments: [
        "$5$rounds=1000$saltsaltsalt$JF3rrH21h5jPz83Fdlmgpe2orguumnb8a3vAUfrvB78",
        "$6$saltsaltsalt$Cy2drr8kDRji6smvDcT28wkqtq0R0VzVL5CkrjPQCITc5d/31j94knt9rGTcVSyjLXfjsiIsBh5ee8qR/3QDx1",
        "$y$j9T$saltsaltsaltsalt$gNcNhvFTt75JDF1LO9O.MCPyp8TkQxrhQSKqUeo/Uy6",
        "$2b$04$abcdefghijklmnopqrstuujydOTSfIH/d5oUHpsygqV5X9xJLQc6e",
    ])
    func otherCryptSchemesVerify(hash: String) async throws {
        try await withTemporaryDirectory { directory in
            let path = try write("frank:\(hash)\n", to: directory, name: "htpasswd")
            let auth = try ClientAuthenticator(htpasswdFile: path)
            #expect(auth.check(authorization: basic("frank", "correct horse")) == .allowed(user: "frank"))
            #expect(isDenied(auth.check(authorization: basic("frank", "correct horse "))))
        }
    }

    @Test func challengeStrings() async throws {
        try await withTemporaryDirectory { directory in
            let users = try await makeBcryptFile(in: directory)
            let tokens = try write("\(goodToken)\n", to: directory, name: "tokens")
            #expect(try ClientAuthenticator(htpasswdFile: users).challenge == "Basic realm=\"slipway\"")
            #expect(try ClientAuthenticator(tokenFile: tokens).challenge == "Bearer realm=\"slipway\"")
            let both = try ClientAuthenticator(htpasswdFile: users, tokenFile: tokens)
            #expect(both.challenge == "Basic realm=\"slipway\"")
            #expect(both.check(authorization: "Bearer \(goodToken)") == .allowed(user: nil))
            #expect(both.check(authorization: basic("bob", "builder-secret")) == .allowed(user: "bob"))
        }
    }
}

/// `authorize`, what the server calls: failures counted per client, throttled clients refused unverified.
@Suite(.tags(.unit)) struct AuthorizationThrottlingTests {
    @Test func aClientIsThrottledAfterItsFailuresUntilTheWindowEnds() {
        let throttle = AuthFailureThrottle(maxFailures: 3, window: .seconds(60))
        let start = ContinuousClock.now
        for failure in 0..<3 {
            #expect(throttle.retryAfter(client: "10.0.0.1", now: start) == nil)
            throttle.recordFailure(client: "10.0.0.1", now: start + .seconds(failure))
        }
        #expect(throttle.retryAfter(client: "10.0.0.1", now: start + .seconds(10)) == 50)
        #expect(throttle.retryAfter(client: "10.0.0.1", now: start + .milliseconds(59_500)) == 1)
        #expect(throttle.retryAfter(client: "10.0.0.2", now: start + .seconds(10)) == nil)
        #expect(throttle.retryAfter(client: "10.0.0.1", now: start + .seconds(60)) == nil)
        // A new window starts counting afresh.
        throttle.recordFailure(client: "10.0.0.1", now: start + .seconds(61))
        #expect(throttle.retryAfter(client: "10.0.0.1", now: start + .seconds(61)) == nil)
    }

    @Test func theTableOfClientsStaysBounded() {
        let throttle = AuthFailureThrottle(maxFailures: 2, window: .seconds(60), capacity: 100)
        let start = ContinuousClock.now
        for client in 0..<1000 { throttle.recordFailure(client: "client-\(client)", now: start + .milliseconds(client)) }
        #expect(throttle.trackedClients == 100)
        // The most recent clients are the ones remembered.
        throttle.recordFailure(client: "client-999", now: start + .seconds(1))
        #expect(throttle.retryAfter(client: "client-999", now: start + .seconds(1)) != nil)
    }

    @Test func aThrottledClientIsRefusedWithoutVerificationButRecentlyVerifiedCredentialsPass() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("slipway-throttle-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let auth = try await ClientAuthenticator(
            htpasswdFile: try makeBcryptFile(in: directory), failures: AuthFailureThrottle(maxFailures: 3, window: .seconds(600)))
        let now = ContinuousClock.now
        #expect(await auth.authorize(authorization: basic("alice", "wonderland"), client: "a", now: now) == .allowed(user: "alice"))
        for attempt in 0..<3 {
            #expect(isDenied(await auth.authorize(authorization: basic("alice", "guess\(attempt)"), client: "a", now: now)))
        }
        // Missing credentials are not failures (clients ask without them first to learn the challenge).
        for _ in 0..<5 { #expect(isDenied(await auth.authorize(authorization: nil, client: "b", now: now))) }

        guard case .throttled(let retryAfter, _) = await auth.authorize(authorization: basic("alice", "guess4"), client: "a", now: now) else {
            Issue.record("a fourth wrong password was verified")
            return
        }
        #expect(retryAfter == 600)
        // Right but never verified: refused like any guess, since telling them apart would cost a verification.
        guard case .throttled = await auth.authorize(authorization: basic("bob", "builder-secret"), client: "a", now: now) else {
            Issue.record("a throttled client got a verification")
            return
        }
        #expect(await auth.authorize(authorization: basic("alice", "wonderland"), client: "a", now: now) == .allowed(user: "alice"))
        // Other clients are not affected.
        #expect(await auth.authorize(authorization: basic("bob", "builder-secret"), client: "b", now: now) == .allowed(user: "bob"))
        #expect(auth.cachedVerificationCount == 2)
    }

    @Test func hashingQueueRefusesWorkBeyondItsBound() async {
        let queue = HashingQueue(threads: 1, maxWaiting: 1)
        let release = DispatchSemaphore(value: 0)
        let started = DispatchSemaphore(value: 0)
        async let first = queue.run { started.signal(); release.wait(); return 1 }
        // Wait (off the pool) until the first occupies the only place.
        await withCheckedContinuation { continuation in DispatchQueue.global().async { started.wait(); continuation.resume() } }
        #expect(await queue.run { 2 } == nil)
        release.signal()
        #expect(await first == 1)
        #expect(await queue.run { 3 } == 3)
    }
}
