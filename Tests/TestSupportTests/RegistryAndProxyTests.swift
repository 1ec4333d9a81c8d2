import Foundation
import Testing
import TestSupport

@Suite("RegistryProcess", .tags(.integration), .timeLimit(.minutes(1)))
struct RegistryProcessTests {
    @Test func startsAnswersAndStops() async throws {
        let registry = try await RegistryProcess.start()
        #expect(registry.host == "127.0.0.1:\(registry.port)")
        #expect(registry.url.absoluteString == "http://\(registry.host)")
        let ping = try await curl([], "\(registry.url)/v2/")
        #expect(ping.status == 200)
        #expect(ping.header("Docker-Distribution-Api-Version") == "registry/2.0")

        let data = sampleData(count: 300)
        let digest = try await pushBlob(data, repository: "lib/x", to: registry.url)
        let get = try await curl([], "\(registry.url)/v2/lib/x/blobs/\(digest)")
        #expect(get.status == 200)
        #expect(get.body == data)
        #expect(FileManager.default.fileExists(atPath: registry.storageDirectory.appendingPathComponent("docker").path))

        // Deletion is enabled.
        let delete = try await curl(["-X", "DELETE"], "\(registry.url)/v2/lib/x/blobs/\(digest)")
        #expect(delete.status == 202)

        let pid = registry.processIdentifier
        await registry.stop()
        #expect(!registry.isRunning)
        #expect(kill(pid, 0) != 0)
        #expect(!FileManager.default.fileExists(atPath: registry.workDirectory.path))
        let after = try await curl([], "\(registry.url)/v2/", maxTime: 2)
        #expect(after.exitCode != 0)
    }

    @Test func basicAuth() async throws {
        let credentials = BasicCredentials(username: "alice", password: "s3cret")
        try await RegistryProcess.withRegistry(auth: credentials) { registry in
            let anonymous = try await curl([], "\(registry.url)/v2/")
            #expect(anonymous.status == 401)
            #expect(anonymous.header("WWW-Authenticate")?.hasPrefix("Basic realm=") == true)
            let wrong = try await curl(["-u", "alice:nope"], "\(registry.url)/v2/")
            #expect(wrong.status == 401)
            let right = try await curl(["-u", "alice:s3cret"], "\(registry.url)/v2/")
            #expect(right.status == 200)
        }
    }
}

@Suite("FaultProxy", .tags(.integration), .timeLimit(.minutes(1)))
struct FaultProxyTests {
    @Test func pushAndPullThroughProxy() async throws {
        let credentials = BasicCredentials(username: "bob", password: "pw")
        try await withRegistryAndProxy(auth: credentials) { registry, proxy in
            let data = sampleData(count: 70_000)
            // Location of the upload is rewritten to point at the proxy.
            let start = try await curl(["-u", "bob:pw", "-X", "POST"], "\(proxy.url)/v2/app/blobs/uploads/")
            #expect(start.status == 202)
            let location = try #require(start.header("Location"))
            #expect(location.hasPrefix("http://\(proxy.host)/v2/app/blobs/uploads/"))
            #expect(!location.contains(registry.host))

            let digest = try await pushBlob(data, repository: "app", to: proxy.url, extraArguments: ["-u", "bob:pw"])
            let get = try await curl(["-u", "bob:pw"], "\(proxy.url)/v2/app/blobs/\(digest)")
            #expect(get.status == 200)
            #expect(get.body == data)
            let head = try await curl(["-u", "bob:pw", "-I"], "\(proxy.url)/v2/app/blobs/\(digest)")
            #expect(head.status == 200)
            #expect(head.header("Content-Length") == "70000")

            // Basic auth passes through to the registry.
            let anonymous = try await curl([], "\(proxy.url)/v2/app/blobs/\(digest)")
            #expect(anonymous.status == 401)

            let puts = proxy.requests(matching: "/blobs/uploads/", method: "PUT")
            #expect(puts.count == 1)
            #expect(puts.first?.status == 201)
            #expect(puts.first?.requestBodyBytes == 70_000)
            #expect(puts.first?.query?.contains("digest=") == true)
            let gets = proxy.requests(matching: "/blobs/\(digest)", method: "GET")
            #expect(gets.map(\.status) == [200, 401])
            #expect(gets.map(\.hasAuthorization) == [true, false])
            #expect(gets.first?.responseBodyBytes == 70_000)
        }
    }

    @Test func largeChunkedUploadAndDownloadStream() async throws {
        try await withRegistryAndProxy { _, proxy in
            let data = sampleData(count: 8 << 20, seed: 3)
            let digest = sha256Digest(data)
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("big-\(UUID().uuidString)")
            try data.write(to: file)
            defer { try? FileManager.default.removeItem(at: file) }

            let start = try await curl(["-X", "POST"], "\(proxy.url)/v2/big/blobs/uploads/")
            let location = try #require(start.header("Location"))
            // Chunked request body (no Content-Length) through the proxy; the
            // proxy answers `Expect: 100-continue` itself.
            // curl would wait 60 s for a 100 that never comes, past the 20 s limit: a pass means the proxy sent it.
            let patch = try await curl(
                [
                    "-X", "PATCH", "-H", "Transfer-Encoding: chunked", "-H", "Expect: 100-continue", "-H", "Content-Type: application/octet-stream",
                    "--expect100-timeout", "60", "--data-binary", "@\(file.path)",
                ], location, maxTime: 20)
            #expect(patch.status == 202)
            #expect(patch.header("Range") == "0-\(data.count - 1)")
            let next = try #require(patch.header("Location"))
            #expect(next.hasPrefix("http://\(proxy.host)/"))
            let put = try await curl(["-X", "PUT"], next + (next.contains("?") ? "&" : "?") + "digest=\(digest)")
            #expect(put.status == 201)

            let get = try await curl([], "\(proxy.url)/v2/big/blobs/\(digest)", maxTime: 30)
            #expect(get.exitCode == 0)
            #expect(get.body.count == data.count)
            #expect(get.body == data)
            #expect(proxy.requests(method: "PATCH").first?.requestBodyBytes == data.count)
        }
    }

    @Test func statusFaultsFireTheirCountThenForward() async throws {
        try await withRegistryAndProxy { registry, proxy in
            let digest = try await pushBlob(sampleData(count: 100), repository: "x", to: registry.url)
            proxy.addRule(FaultRule(method: "GET", path: "/blobs/", fault: .serviceUnavailable, times: 2))
            proxy.addRule(FaultRule(method: "GET", path: "/blobs/", fault: .tooManyRequests(retryAfter: 1)))
            proxy.addRule(FaultRule(method: "HEAD", match: .pathRegex("^/v2/x/blobs/sha256:[0-9a-f]{64}$"), fault: .internalServerError))
            #expect(proxy.remainingFaults == 4)

            let url = "\(proxy.url)/v2/x/blobs/\(digest)"
            var statuses: [Int] = []
            for _ in 0..<4 { statuses.append(try await curl([], url).status) }
            #expect(statuses == [503, 503, 429, 200])
            let throttled = proxy.requests(method: "GET")[2]
            #expect(throttled.status == 429)
            #expect(throttled.action == "status(429)")

            let retryAfter = try await {
                proxy.addRule(FaultRule(path: "/blobs/", fault: .tooManyRequests(retryAfter: 7)))
                return try await curl([], url)
            }()
            #expect(retryAfter.status == 429)
            #expect(retryAfter.header("Retry-After") == "7")

            #expect(try await curl(["-I"], url).status == 500)
            #expect(try await curl(["-I"], url).status == 200)
            #expect(proxy.remainingFaults == 0)
            #expect(proxy.pendingRules.isEmpty)
            #expect(proxy.requests(matching: "/blobs/").count == 7)
        }
    }

    @Test func truncateBodyClosesAfterNBytes() async throws {
        try await withRegistryAndProxy { registry, proxy in
            let data = sampleData(count: 5000)
            let digest = try await pushBlob(data, repository: "x", to: registry.url)
            proxy.inject(.truncateBody(bytes: 1234), method: "GET", path: "/blobs/")
            let url = "\(proxy.url)/v2/x/blobs/\(digest)"
            let cut = try await curl([], url)
            #expect(cut.status == 200)
            #expect(cut.header("Content-Length") == "5000")
            #expect(cut.exitCode == 18)  // CURLE_PARTIAL_FILE
            #expect(cut.body == data.prefix(1234))
            let whole = try await curl([], url)
            #expect(whole.exitCode == 0)
            #expect(whole.body == data)
            let log = proxy.requests(matching: "/blobs/", method: "GET")
            #expect(log.map(\.responseBodyBytes) == [1234, 5000])
        }
    }

    @Test func resetAfterAbortsConnection() async throws {
        try await withRegistryAndProxy { registry, proxy in
            let data = sampleData(count: 200_000)
            let digest = try await pushBlob(data, repository: "x", to: registry.url)
            proxy.inject(.resetAfter(bytes: 1000), path: "/blobs/sha256:")
            let url = "\(proxy.url)/v2/x/blobs/\(digest)"
            let reset = try await curl([], url)
            #expect(reset.status == 200)
            #expect(reset.exitCode != 0)
            #expect(reset.body.count <= 1000)
            #expect(data.starts(with: reset.body))
            #expect(proxy.requests(matching: "/blobs/").first?.action?.contains("connection reset") == true)
            #expect(try await curl([], url).body == data)
        }
    }

    @Test func flipByteCorruptsExactlyOneByte() async throws {
        try await withRegistryAndProxy { registry, proxy in
            let data = sampleData(count: 100_000)
            let digest = try await pushBlob(data, repository: "x", to: registry.url)
            proxy.inject(.flipByte(at: 77_777), path: "/blobs/")
            let url = "\(proxy.url)/v2/x/blobs/\(digest)"
            let flipped = try await curl([], url)
            #expect(flipped.exitCode == 0)
            #expect(flipped.body.count == data.count)
            let differing = zip(flipped.body, data).enumerated().filter { $0.element.0 != $0.element.1 }.map(\.offset)
            #expect(differing == [77_777])
            #expect(sha256Digest(flipped.body) != digest)
            #expect(try await curl([], url).body == data)
        }
    }

    @Test func stallDelaysTheAnswer() async throws {
        try await withRegistryAndProxy { registry, proxy in
            let digest = try await pushBlob(sampleData(count: 10), repository: "x", to: registry.url)
            let url = "\(proxy.url)/v2/x/blobs/\(digest)"
            proxy.inject(.stall(seconds: 5), path: "/blobs/")
            let timedOut = try await curl([], url, maxTime: 0.5)
            #expect(timedOut.exitCode == 28)  // CURLE_OPERATION_TIMEDOUT

            proxy.inject(.stall(seconds: 0.4), path: "/blobs/")
            let clock = ContinuousClock()
            let start = clock.now
            let slow = try await curl([], url)
            #expect(clock.now - start >= .milliseconds(400))
            #expect(slow.status == 200)
            #expect(slow.body.count == 10)
        }
    }

    @Test func ignoreRangeDropsTheRangeHeader() async throws {
        try await withRegistryAndProxy { registry, proxy in
            let data = sampleData(count: 4096)
            let digest = try await pushBlob(data, repository: "x", to: registry.url)
            let url = "\(proxy.url)/v2/x/blobs/\(digest)"
            let partial = try await curl(["-H", "Range: bytes=100-199"], url)
            #expect(partial.status == 206)
            #expect(partial.body == data[100..<200])

            proxy.inject(.ignoreRange, path: "/blobs/")
            let full = try await curl(["-H", "Range: bytes=100-199"], url)
            #expect(full.status == 200)
            #expect(full.body == data)
            #expect(proxy.requests(matching: "/blobs/").map(\.range) == ["bytes=100-199", "bytes=100-199"])
        }
    }

    @Test func unreachableUpstreamGives502() async throws {
        try await withRefusingLoopbackPort { port in
            let proxy = try await FaultProxy.start(upstreamPort: port)
            let answer = try await curl([], "\(proxy.url)/v2/")
            #expect(answer.status == 502)
            try await proxy.stop()
        }
    }
}

@Suite("Token auth emulation", .tags(.integration), .timeLimit(.minutes(1)))
struct TokenAuthTests {
    struct TokenResponse: Decodable {
        var token: String
        var access_token: String
        var expires_in: Int
        var issued_at: String
    }

    @Test func challengeTokenAndExpiry() async throws {
        try await withRegistryAndProxy { registry, proxy in
            let data = sampleData(count: 64)
            let digest = try await pushBlob(data, repository: "team/app", to: registry.url)
            // Long enough for the checks below on a loaded machine; expiry is checked with a short-lived token.
            proxy.enableTokenAuth(username: "u", password: "p", tokenLifetime: 300)
            let blobURL = "\(proxy.url)/v2/team/app/blobs/\(digest)"

            let challenged = try await curl([], blobURL)
            #expect(challenged.status == 401)
            #expect(
                challenged.header("WWW-Authenticate")
                    == "Bearer realm=\"http://\(proxy.host)/token\",service=\"test-registry\",scope=\"repository:team/app:pull\""
            )
            let pushChallenge = try await curl(["-X", "POST"], "\(proxy.url)/v2/team/app/blobs/uploads/")
            #expect(pushChallenge.header("WWW-Authenticate")?.hasSuffix("scope=\"repository:team/app:pull,push\"") == true)
            let base = try await curl([], "\(proxy.url)/v2/")
            #expect(base.status == 401)
            #expect(base.header("WWW-Authenticate") == "Bearer realm=\"\(proxy.tokenRealm)\",service=\"test-registry\"")

            let tokenURL = "\(proxy.tokenRealm)?service=test-registry&scope=repository:team/app:pull"
            #expect(try await curl([], tokenURL).status == 401)
            #expect(try await curl(["-u", "u:wrong"], tokenURL).status == 401)
            let tokenReply = try await curl(["-u", "u:p"], tokenURL)
            #expect(tokenReply.status == 200)
            let token = try JSONDecoder().decode(TokenResponse.self, from: tokenReply.body)
            #expect(token.token == token.access_token)
            #expect(token.expires_in == 300)
            #expect(ISO8601DateFormatter().date(from: token.issued_at) != nil)

            let authorized = try await curl(["-H", "Authorization: Bearer \(token.token)"], blobURL)
            #expect(authorized.status == 200)
            #expect(authorized.body == data)
            #expect(try await curl(["-H", "Authorization: Bearer \(token.token)"], "\(proxy.url)/v2/").status == 200)
            #expect(try await curl(["-H", "Authorization: Bearer nonsense"], blobURL).status == 401)
            // Wrong scope: other repository, or push with a pull token.
            #expect(
                try await curl(["-H", "Authorization: Bearer \(token.token)"], "\(proxy.url)/v2/other/blobs/\(digest)")
                    .status == 401)
            #expect(
                try await curl(
                    ["-X", "POST", "-H", "Authorization: Bearer \(token.token)"], "\(proxy.url)/v2/team/app/blobs/uploads/"
                ).status == 401)

            #expect(proxy.tokenRequestCount(scope: "repository:team/app:pull") == 1)
            #expect(proxy.tokenRequests.map(\.status) == [401, 401, 200])
            #expect(proxy.tokenRequests.last?.username == "u")

            // Expiry.
            proxy.enableTokenAuth(username: "u", password: "p", tokenLifetime: 1.5)
            let shortLived = try JSONDecoder().decode(TokenResponse.self, from: try await curl(["-u", "u:p"], tokenURL).body)
            #expect(shortLived.expires_in == 2)
            try await Task.sleep(for: .milliseconds(1600))
            #expect(try await curl(["-H", "Authorization: Bearer \(shortLived.token)"], blobURL).status == 401)

            // Push with a pull,push token works end to end through the proxy. The token must outlive the push,
            // which on a loaded machine takes longer than the 1.5 s lifetime the expiry check needs.
            proxy.enableTokenAuth(username: "u", password: "p", tokenLifetime: 300)
            let pushToken = try JSONDecoder().decode(
                TokenResponse.self,
                from: try await curl(
                    ["-u", "u:p"], "\(proxy.tokenRealm)?service=test-registry&scope=repository:team/app:pull,push"
                ).body)
            let pushed = try await pushBlob(
                sampleData(count: 10, seed: 7), repository: "team/app", to: proxy.url,
                extraArguments: ["-H", "Authorization: Bearer \(pushToken.token)"])
            #expect(pushed == sha256Digest(sampleData(count: 10, seed: 7)))
            #expect(proxy.tokenRequestCount() == 3, "the pull token, the short-lived one and the push token")
        }
    }

    @Test func anonymousPullAndTokenEndpointFaults() async throws {
        try await withRegistryAndProxy { registry, proxy in
            proxy.enableTokenAuth(
                TokenAuthConfiguration(
                    credentials: BasicCredentials(username: "u", password: "p"), allowAnonymousPull: true))
            proxy.inject(.serviceUnavailable, path: "/token")
            let url = "\(proxy.tokenRealm)?service=test-registry&scope=repository:a:pull,push"
            #expect(try await curl([], url).status == 503)
            let anonymous = try await curl([], url)
            #expect(anonymous.status == 200)
            let token = try JSONDecoder().decode(TokenResponse.self, from: anonymous.body)
            #expect(token.expires_in == 300)
            let auth = ["-H", "Authorization: Bearer \(token.token)"]
            // Anonymous tokens carry pull only.
            #expect(try await curl(auth, "\(proxy.url)/v2/a/tags/list").status == 404)  // forwarded
            #expect(try await curl(auth + ["-X", "POST"], "\(proxy.url)/v2/a/blobs/uploads/").status == 401)
            #expect(proxy.tokenRequests.last?.username == nil)
        }
    }

    @Test func authorizationIsNotForwardedUpstream() async throws {
        try await RegistryProcess.withRegistry { registry in
            let back = try await FaultProxy.start(upstream: registry)
            let front = try await FaultProxy.start(upstream: back)
            defer { Task { try? await front.stop(); try? await back.stop() } }
            front.enableTokenAuth(TokenAuthConfiguration())  // anyone gets any scope
            let reply = try await curl([], "\(front.tokenRealm)?service=test-registry&scope=repository:r:pull")
            let token = try JSONDecoder().decode(TokenResponse.self, from: reply.body)
            let tags = try await curl(["-H", "Authorization: Bearer \(token.token)"], "\(front.url)/v2/r/tags/list")
            #expect(tags.status == 404)
            #expect(front.requests(matching: "/tags/list").first?.authorizationScheme == "Bearer")
            #expect(back.requests(matching: "/tags/list").count == 1)
            #expect(back.requests(matching: "/tags/list").first?.hasAuthorization == false)
            #expect(back.requests(matching: "/token").isEmpty)
        }
    }

    @Test func blobRedirectToSecondProxyDropsCredentials() async throws {
        let credentials = BasicCredentials(username: "u", password: "p")
        try await RegistryProcess.withRegistry { registry in
            let data = sampleData(count: 2048)
            let digest = try await pushBlob(data, repository: "r", to: registry.url)
            let front = try await FaultProxy.start(upstream: registry)
            let storage = try await FaultProxy.start(upstream: registry)
            defer { Task { try? await front.stop(); try? await storage.stop() } }
            front.redirectBlobs(to: storage)
            let direct = try await curl(["-u", "u:p"], "\(front.url)/v2/r/blobs/\(digest)")
            #expect(direct.status == 307)
            #expect(direct.header("Location") == "http://\(storage.host)/v2/r/blobs/\(digest)")

            // curl -L does not resend credentials to another host.
            let followed = try await curl(["-L", "-u", "\(credentials.username):\(credentials.password)"], "\(front.url)/v2/r/blobs/\(digest)")
            #expect(followed.status == 200)
            #expect(followed.body == data)
            #expect(front.requests(matching: "/blobs/").allSatisfy { $0.hasAuthorization && $0.status == 307 })
            #expect(storage.requests(matching: "/blobs/").count == 1)
            #expect(storage.requests(matching: "/blobs/").first?.hasAuthorization == false)
            // Manifests and uploads are not redirected.
            #expect(try await curl([], "\(front.url)/v2/r/manifests/latest").status == 404)
        }
    }
}
