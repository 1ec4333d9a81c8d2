import ContentStore
import Foundation
import OCI
import Registry
import Slipway
import Testing
import TestSupport

/// Authentication against a real htpasswd registry and a token-auth front end, credentials from
/// docker's config.json and credential helpers, and redirects that must not leak credentials.
@Suite(.tags(.integration)) struct AuthTests {
    static let user = BasicCredentials(username: "alice", password: "s3cret-pass")

    @Test func basicAuthRegistry() async throws {
        let scratch = try ScratchDirectory()
        let layout = try makeDemoLayout(scratch)
        try await RegistryProcess.withRegistry(auth: Self.user) { registry in
            let good = [registry.host: Credentials(username: Self.user.username, secret: Self.user.password)]
            try await withSession(try makeSession(credentials: good)) { session in
                try await push(layout, to: "\(registry.host)/private:v1", session: session)
                _ = try await Puller(session: session, store: try ContentStore(root: scratch.sub("store")))
                    .pull(try ImageLocation(parsing: "\(registry.host)/private:v1"))
            }
            try await withSession(try makeSession()) { session in
                await #expect {
                    _ = try await Puller(session: session, store: try ContentStore(root: scratch.sub("store2")))
                        .pull(try ImageLocation(parsing: "\(registry.host)/private:v1"))
                } throws: { error in
                    String(describing: error).contains("asks for a user name and password")
                }
            }
        }
    }

    @Test func bearerTokensAreCachedPerScopeAndRefreshed() async throws {
        let scratch = try ScratchDirectory()
        let layout = try makeDemoLayout(scratch)
        try await withRegistryAndProxy { _, proxy in
            proxy.enableTokenAuth(username: Self.user.username, password: Self.user.password, tokenLifetime: 300)
            let credentials = [proxy.host: Credentials(username: Self.user.username, secret: Self.user.password)]
            try await withSession(try makeSession(credentials: credentials)) { session in
                try await push(layout, to: "\(proxy.host)/tok:v1", session: session)
                let pullScope = "repository:tok:pull"
                let store = try ContentStore(root: scratch.sub("store"))
                _ = try await Puller(session: session, store: store).pull(try ImageLocation(parsing: "\(proxy.host)/tok:v1"))
                // One token for the whole pull (manifest, config, three layers), not one per request.
                #expect(proxy.tokenRequestCount(scope: pullScope) == 1, "\(proxy.tokenRequests) \(proxy.requestLog.map(\.description))")
                #expect(proxy.tokenRequests.allSatisfy { $0.username == Self.user.username })

                // The server forgets its tokens: the next request gets 401 and the client fetches a new one.
                proxy.revokeAllTokens()
                let store2 = try ContentStore(root: scratch.sub("store2"))
                _ = try await Puller(session: session, store: store2).pull(try ImageLocation(parsing: "\(proxy.host)/tok:v1"))
                #expect(proxy.tokenRequestCount(scope: pullScope) == 2)
            }
            try await withSession(try makeSession()) { session in
                await #expect {
                    _ = try await Puller(session: session, store: try ContentStore(root: scratch.sub("anon")))
                        .pull(try ImageLocation(parsing: "\(proxy.host)/tok:v1"))
                } throws: { String(describing: $0).contains("token server refused") }
            }
        }
    }

    @Test func credentialsAreNotForwardedOnCrossHostRedirects() async throws {
        let scratch = try ScratchDirectory()
        let layout = try makeDemoLayout(scratch)
        try await RegistryProcess.withRegistry { registry in
            let front = try await FaultProxy.start(upstream: registry)
            let storage = try await FaultProxy.start(upstream: registry)
            defer { Task { try? await front.stop(); try? await storage.stop() } }
            front.enableTokenAuth(username: Self.user.username, password: Self.user.password)
            let credentials = [front.host: Credentials(username: Self.user.username, secret: Self.user.password)]
            try await withSession(try makeSession(credentials: credentials)) { session in
                try await push(layout, to: "\(front.host)/redir:v1", session: session)
                front.redirectBlobs(to: storage)
                let store = try ContentStore(root: scratch.sub("store"))
                let (image, _) = try await Puller(session: session, store: store).pull(try ImageLocation(parsing: "\(front.host)/redir:v1"))
                for layer in image.manifest.layers { #expect(store.hasBlob(layer)) }
                let redirected = storage.requests(matching: "/blobs/", method: "GET")
                #expect(redirected.count >= image.manifest.layers.count)
                #expect(redirected.allSatisfy { !$0.hasAuthorization })
            }
        }
    }

    @Test func dockerConfigAuthsAndCredentialHelpers() async throws {
        let scratch = try ScratchDirectory()
        let encoded = Data("bob:hunter2".utf8).base64EncodedString()
        let config = """
            {"auths": {"registry.example:5000": {"auth": "\(encoded)"}, "https://index.docker.io/v1/": {"auth": "\(encoded)"}},
             "credHelpers": {"helped.example": "slipwaytest", "slow.example": "slipwayslow"}}
            """
        try config.write(toFile: scratch.sub("config.json"), atomically: true, encoding: .utf8)
        // A credential helper speaking the docker-credential protocol: server URL on stdin, JSON on stdout.
        let helper = scratch.sub("bin/docker-credential-slipwaytest")
        try FileManager.default.createDirectory(atPath: scratch.sub("bin"), withIntermediateDirectories: true)
        try """
            #!/bin/sh
            read server
            [ "$1" = get ] && [ "$server" = helped.example ] && echo '{"ServerURL":"helped.example","Username":"carol","Secret":"from-helper"}' && exit 0
            echo "credentials not found in native keychain"; exit 1
            """.write(toFile: helper, atomically: true, encoding: .utf8)
        chmod(helper, 0o755)
        // A helper that answers only once this task ran again after the helper started (as a keychain prompt waits
        // for the user): asking it must not hold the thread the asking task runs on. It gives up after a minute,
        // which fails the test instead of hanging it.
        let slowHelper = scratch.sub("bin/docker-credential-slipwayslow")
        let (asked, answer) = (scratch.sub("slow-helper-asked"), scratch.sub("slow-helper-may-answer"))
        try """
            #!/bin/sh
            read server
            touch '\(asked)'
            for _ in $(seq 1200); do
              [ -e '\(answer)' ] && echo '{"ServerURL":"'$server'","Username":"dave","Secret":"after-a-while"}' && exit 0
              sleep 0.05
            done
            echo "gave up waiting" >&2; exit 1
            """.write(toFile: slowHelper, atomically: true, encoding: .utf8)
        chmod(slowHelper, 0o755)
        setenv("PATH", "\(scratch.sub("bin")):\(ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")", 1)

        let provider = try DockerConfigCredentials(path: scratch.sub("config.json"))
        #expect(try await provider.credentials(for: "registry.example:5000") == Credentials(username: "bob", secret: "hunter2"))
        #expect(try await provider.credentials(for: "docker.io") == Credentials(username: "bob", secret: "hunter2"))
        #expect(try await provider.credentials(for: "helped.example") == Credentials(username: "carol", secret: "from-helper"))
        #expect(try await provider.credentials(for: "unknown.example") == nil)

        // The helper and this task share one thread (see OneThreadExecutor).
        try await withTaskExecutorPreference(OneThreadExecutor.shared) {
            async let slow = provider.credentials(for: "slow.example")
            // Bounded, so that a helper that never starts fails the test below instead of hanging it.
            for _ in 0..<6000 where !FileManager.default.fileExists(atPath: asked) { try await Task.sleep(for: .milliseconds(10)) }
            FileManager.default.createFile(atPath: answer, contents: nil)
            #expect(try await slow == Credentials(username: "dave", secret: "after-a-while"))
        }

        try "{not json".write(toFile: scratch.sub("bad.json"), atomically: true, encoding: .utf8)
        #expect(throws: RegistryError.self) { try DockerConfigCredentials(path: scratch.sub("bad.json")) }
    }
}

/// `--creds` belongs to the source and `--dest-creds` to the destination: one registry's password is never
/// offered to another.
@Suite(.tags(.integration)) struct CredentialScopingTests {
    @Test func copyUsesEachRegistrysOwnCredentials() async throws {
        let scratch = try ScratchDirectory()
        let layout = try makeDemoLayout(scratch)
        let alice = BasicCredentials(username: "alice", password: "alice-pass")
        let bob = BasicCredentials(username: "bob", password: "bob-pass")
        try await RegistryProcess.withRegistry(auth: alice) { source in
            try await RegistryProcess.withRegistry(auth: bob) { target in
                let pushed = try await run(slipwayBinary, ["copy", "-q", "--dest-creds", "alice:alice-pass", "oci:\(layout.root):demo", "\(source.host)/app:v1"])
                #expect(pushed.status == 0, "\(pushed.stderr)")
                let onlySource = try await run(slipwayBinary, ["copy", "-q", "--creds", "alice:alice-pass", "\(source.host)/app:v1", "\(target.host)/app:v1"])
                #expect(onlySource.status == 1)
                #expect(onlySource.stderr.contains("asks for a user name and password"), "\(onlySource.stderr)")
                let both = try await run(slipwayBinary, [
                    "copy", "-q", "--creds", "alice:alice-pass", "--dest-creds", "bob:bob-pass", "\(source.host)/app:v1", "\(target.host)/app:v1",
                ])
                #expect(both.status == 0, "\(both.stderr)")
            }
        }
    }
}
