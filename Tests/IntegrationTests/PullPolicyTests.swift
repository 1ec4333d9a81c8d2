import ContentStore
import Foundation
import OCI
import Slipway
import Testing
import TestSupport

/// `Puller.image(_:policy:)`, what `run --pull` (and the Slurm plugin, with `newer`) decides with: which policies ask the registry, and what a store
/// that already has the image saves.
@Suite(.tags(.integration)) struct PullPolicyTests {
    @Test func eachPolicyAsksTheRegistryOnlyWhenItSays() async throws {
        let scratch = try ScratchDirectory()
        let layout = try makeDemoLayout(scratch)
        try await withRegistryAndProxy { _, proxy in
            let location = try ImageLocation(parsing: "\(proxy.host)/demo:v1")
            try await withSession(try makeSession()) { session in
                try await push(layout, to: "\(proxy.host)/demo:v1", session: session)
                let store = try ContentStore(root: scratch.sub("store"))
                let puller = Puller(session: session, store: store)
                proxy.clearLog()

                await #expect(throws: ImageNotInStore.self) { try await puller.image(location, policy: .never) }
                #expect(proxy.requests().isEmpty, "never asked the registry: \(proxy.requests().map(\.path))")

                let pulled = try await puller.image(location, policy: .missing)
                #expect(!proxy.requests(matching: "/manifests/").isEmpty)
                for layer in pulled.layers { #expect(store.hasLayerDirectory(layer.diffID), "layers are extracted as they land") }

                proxy.clearLog()
                for policy in [PullPolicy.missing, .never] {
                    let stored = try await puller.image(location, policy: policy)
                    #expect(stored.manifestDescriptor.digest == pulled.manifestDescriptor.digest)
                }
                #expect(proxy.requests().isEmpty, "the store's copy served: \(proxy.requests().map(\.path))")

                let again = try await puller.image(location, policy: .always)
                #expect(again.manifestDescriptor.digest == pulled.manifestDescriptor.digest)
                #expect(!proxy.requests(matching: "/manifests/").isEmpty, "always asks the registry")
                #expect(proxy.requests(matching: "/blobs/", method: "GET").isEmpty, "but fetches no blob the store has")

                // newer: one HEAD while the tag names the stored image; a pull once it names another.
                proxy.clearLog()
                let same = try await puller.image(location, policy: .newer)
                #expect(same.manifestDescriptor.digest == pulled.manifestDescriptor.digest)
                #expect(proxy.requests().map { "\($0.method) \($0.path)" } == ["HEAD /v2/demo/manifests/v1"], "\(proxy.requests().map(\.path))")
                let second = try makeDemoLayout(scratch, version: "2")
                try await push(second, to: "\(proxy.host)/demo:v1", session: session)
                proxy.clearLog()
                let moved = try await puller.image(location, policy: .newer)
                #expect(moved.manifestDescriptor.digest != pulled.manifestDescriptor.digest, "the tag moved: the new image")
                #expect(!proxy.requests(matching: "/manifests/", method: "GET").isEmpty)
            }
        }
    }
}
