import Foundation
import Registry
import Testing
import TestSupport

/// A root process reading another user's docker config (the Slurm plugin's helper) must not run the credential
/// helper the file names: without helpers it answers from the file's `auths` alone.
@Suite(.tags(.unit)) struct DockerConfigHelperTests {
    static let config = Data(#"""
        {"auths": {"registry.example:5000": {"auth": "YWxpY2U6czNjcmV0"}},
         "credHelpers": {"registry.example:5000": "slipway-test-not-installed"},
         "credsStore": "slipway-test-not-installed"}
        """#.utf8)

    @Test func withoutHelpersTheFilesAuthsAnswerAndNoProgramRuns() async throws {
        let credentials = try DockerConfigCredentials(contents: Self.config, path: "/dev/fd/3", runsHelpers: false)
        let found = try #require(try await credentials.credentials(for: "registry.example:5000"))
        #expect(found.username == "alice" && found.secret == "s3cret")
    }

    @Test func withHelpersTheNamedHelperIsAsked() async throws {
        let credentials = try DockerConfigCredentials(contents: Self.config, path: "config.json")
        await #expect(throws: RegistryError.self) { try await credentials.credentials(for: "registry.example:5000") }
    }
}
