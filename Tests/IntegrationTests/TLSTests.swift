import ContentStore
import Foundation
import OCI
import Registry
import Slipway
import Testing
import TestSupport

/// A registry over real TLS (docker-registry with a certificate from a throwaway CA): trusted through
/// `--ca-cert`, refused without it, and a loopback registry without TLS still reached over plain HTTP.
@Suite(.tags(.integration)) struct TLSTests {
    @Test func pullsOverTLSOnlyWhenTheCertificateIsTrusted() async throws {
        let scratch = try ScratchDirectory()
        let layout = try makeDemoLayout(scratch)
        try await RegistryProcess.withRegistry(tls: true) { registry in
            let tls = try #require(registry.tls)
            let reference = "\(registry.host)/secure:v1"
            try await withSession(try makeSession(plainHTTP: false, tls: TLSOptions(caCertificateFiles: [tls.caCertificate]))) { session in
                try await push(layout, to: reference, session: session)
                #expect(session.client(for: registry.host).baseURL.hasPrefix("https://"))
                let (image, _) = try await Puller(session: session, store: try ContentStore(root: scratch.sub("store")))
                    .pull(try ImageLocation(parsing: reference))
                #expect(image.manifest.layers.count == 3)
            }
            // The system roots alone do not trust the test CA: a clear TLS failure, nothing stored.
            let refused = try await run(slipwayBinary, ["pull", "--store", scratch.sub("refused"), reference])
            #expect(refused.status == 1)
            #expect(refused.stderr.lowercased().contains("certificate"), "\(refused.stderr)")
            #expect(try ContentStore(root: scratch.sub("refused")).images().isEmpty)

            let trusted = try await run(slipwayBinary, ["pull", "--ca-cert", tls.caCertificate, "--store", scratch.sub("cli"), reference])
            #expect(trusted.status == 0, "\(trusted.stderr)")
            let unverified = try await run(slipwayBinary, ["pull", "--tls-verify=false", "--store", scratch.sub("insecure"), reference])
            #expect(unverified.status == 0, "\(unverified.stderr)")
            let missingCA = try await run(slipwayBinary, ["pull", "--ca-cert", scratch.sub("nope.pem"), "--store", scratch.sub("x"), reference])
            #expect(missingCA.status == 1)
            #expect(missingCA.stderr.contains("nope.pem"), "\(missingCA.stderr)")
        }
    }
}
