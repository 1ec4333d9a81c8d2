import Testing
import TestSupport
@testable import Registry

@Suite(.tags(.unit)) struct RegistryPolicyTests {
    @Test(arguments: [
        ("localhost:5000", true), ("127.0.0.1", true), ("127.1.2.3:80", true), ("[::1]:5000", true),
        ("127.example.com", false), ("127.0.0.1.nip.io", false), ("registry.example", false), ("10.0.0.1:5000", false),
    ])
    func loopbackDetection(host: String, expected: Bool) {
        #expect(RegistryClient.isLoopback(host) == expected)
    }

    @Test func credentialsStayWithTheRegistryAndItsDomain() {
        let hub = "https://registry-1.docker.io"
        #expect(RegistryClient.mayReceiveCredentials(realmHost: "auth.docker.io", scheme: "https", registryURL: hub))
        #expect(!RegistryClient.mayReceiveCredentials(realmHost: "auth.docker.io", scheme: "http", registryURL: hub))
        #expect(!RegistryClient.mayReceiveCredentials(realmHost: "evil.example", scheme: "https", registryURL: hub))
        // Same host over plain HTTP only if the registry itself is plain HTTP.
        #expect(!RegistryClient.mayReceiveCredentials(realmHost: "registry-1.docker.io", scheme: "http", registryURL: hub))
        #expect(RegistryClient.mayReceiveCredentials(realmHost: "127.0.0.1", scheme: "http", registryURL: "http://127.0.0.1:5000"))
        // IP addresses share no "domain".
        #expect(!RegistryClient.mayReceiveCredentials(realmHost: "10.1.2.3", scheme: "https", registryURL: "https://192.168.2.3"))
    }

    @Test func tokenScopeCoversWhatTheRequestNeeds() {
        #expect(RegistryClient.tokenScope(asked: "repository:a/b:pull,push", challenged: "repository:a/b:pull") == "repository:a/b:pull,push")
        #expect(RegistryClient.tokenScope(asked: "repository:a/b:pull", challenged: nil) == "repository:a/b:pull")
        #expect(
            RegistryClient.tokenScope(asked: "repository:a/b:pull", challenged: "repository:c/d:pull")
                == "repository:a/b:pull repository:c/d:pull")
        #expect(
            RegistryClient.tokenScope(asked: "repository:host:5000/a:pull", challenged: "repository:host:5000/a:pull")
                == "repository:host:5000/a:pull")
    }

    @Test func parsesChallenges() throws {
        let challenge = try #require(AuthChallenge(header: #"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#))
        #expect(challenge.scheme == .bearer)
        #expect(challenge.realm == "https://auth.docker.io/token")
        #expect(challenge.service == "registry.docker.io")
        #expect(challenge.scope == "repository:samalba/my-app:pull,push")
        #expect(AuthChallenge(header: #"Basic realm="Registry Realm""#)?.scheme == .basic)
    }

    @Test func retryAfterAndBackoff() {
        #expect(RetryPolicy.parseRetryAfter("3") == 3)
        #expect(RetryPolicy.parseRetryAfter("soon") == nil)
        let policy = RetryPolicy(maxAttempts: 5, baseDelay: 0.2, maxDelay: 1, maxRetryAfter: 10)
        #expect(policy.delay(afterAttempt: 1, retryAfter: nil) <= 0.2)
        #expect(policy.delay(afterAttempt: 8, retryAfter: nil) <= 1)
        #expect(policy.delay(afterAttempt: 1, retryAfter: 5) == 5)
        #expect(policy.delay(afterAttempt: 1, retryAfter: 3600) == 10)
    }
}
