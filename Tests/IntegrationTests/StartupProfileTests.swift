import Blocking
import Foundation
import LazyFS
import OCI
import Testing
import TestSupport

/// A lazy mount keeps what its workload opened as the image's start-up profile in the store, and the next mount
/// of the image with a cold cache fetches those files first; a profile that names other things is not trusted.
@Suite(.tags(.integration, .slow), .enabled(if: fuseAvailable, "needs /dev/fuse and root"), .serialized)
struct StartupProfileTests {
    let mounts = LazyMountTests()

    func read(_ mounted: LazyMountTests.Mounted, _ paths: [String]) async throws {
        for path in paths {
            let data = try await runBlocking { FileManager.default.contents(atPath: "\(mounted.directory)/\(path)") }
            #expect(data != nil, "\(path) unreadable")
        }
    }

    /// Mounts with a cold chunk cache and `--prefetch landmark` (the demo image has no prioritized files, so only
    /// the profile is fetched), waiting until that prefetch is done.
    func coldMount(_ reference: String, _ scratch: ScratchDirectory, name: String, store: String) async throws -> LazyMountTests.Mounted {
        try? FileManager.default.removeItem(atPath: "\(store)/chunks")
        let mounted = try await mounts.mount(reference, scratch, name: name, store: store, options: ["--prefetch", "landmark"])
        try await waitUntil("the prefetch of \(name) finished") { try await mounted.status().statistics.prefetchFinished }
        return mounted
    }

    @Test func aMountKeepsWhatItsWorkloadOpenedAndTheNextColdMountFetchesThatFirst() async throws {
        let scratch = try ScratchDirectory()
        let store = scratch.sub("store")
        try await RegistryProcess.withRegistry { registry in
            let (_, lazy) = try await mounts.publish(registry.host, scratch)
            let first = try await mounts.mount(lazy, scratch, name: "record", store: store, options: ["--prefetch", "none"])
            let manifest = try Digest(try await first.status().manifestDigest)
            try await read(first, ["opt/app/data.bin", "etc/os-release"])
            try await first.unmount()
            // The mount's process keeps the profile as it ends, which `umount` does not wait for on a loaded node.
            try await waitUntil("the profile is kept") { StartupProfile.load(for: manifest, storeRoot: store) != nil }
            let profile = try #require(StartupProfile.load(for: manifest, storeRoot: store))
            #expect(profile.files == ["opt/app/data.bin", "etc/os-release"])

            let cold = try await coldMount(lazy, scratch, name: "cold", store: store)
            #expect(try await cold.status().profileFiles == 2)
            try await read(cold, ["opt/app/data.bin", "etc/os-release"])
            #expect(try await cold.status().statistics.blockingReads == 0, "a profiled file waited for the network")
            try await read(cold, ["opt/app/run.sh"])
            #expect(try await cold.status().statistics.blockingReads > 0, "a file outside the profile was fetched too")
            try await cold.unmount()
            // A profile is kept once: the second mount's reads did not replace it.
            #expect(StartupProfile.load(for: manifest, storeRoot: store) == profile)
        }
    }

    @Test func aProfileIsUsedOnlyForItsImageAndOnlyForFilesTheImageHas() async throws {
        let scratch = try ScratchDirectory()
        let store = scratch.sub("store")
        try await RegistryProcess.withRegistry { registry in
            let (_, lazy) = try await mounts.publish(registry.host, scratch)
            let probe = try await mounts.mount(lazy, scratch, name: "probe", store: store, options: ["--prefetch", "none"])
            let manifest = try Digest(try await probe.status().manifestDigest)
            try await probe.unmount()

            // Files the image does not have are skipped; the rest is fetched first.
            try StartupProfile(image: manifest, files: ["no/such/file", "opt/app/data.bin", "../../etc/shadow", ""]).save(storeRoot: store)
            let partly = try await coldMount(lazy, scratch, name: "partly", store: store)
            #expect(try await partly.status().profileFiles == 1)
            try await read(partly, ["opt/app/data.bin"])
            #expect(try await partly.status().statistics.blockingReads == 0)
            try await partly.unmount()

            // A profile recorded for another image, in this image's place, is not used: nothing is fetched first.
            let other = Digest.sha256(of: Array("another image".utf8))
            let misplaced = try JSONEncoder().encode(StartupProfile(image: other, files: ["opt/app/data.bin"]))
            try misplaced.write(to: URL(fileURLWithPath: StartupProfile.path(for: manifest, storeRoot: store)))
            let ignored = try await coldMount(lazy, scratch, name: "ignored", store: store)
            #expect(try await ignored.status().profileFiles == 0)
            try await read(ignored, ["opt/app/data.bin"])
            #expect(try await ignored.status().statistics.blockingReads > 0)
            try await ignored.unmount()
            // Having no usable profile, that mount recorded one for its own image.
            try await waitUntil("the mount kept a profile of its own") { StartupProfile.load(for: manifest, storeRoot: store) != nil }
            #expect(StartupProfile.load(for: manifest, storeRoot: store)?.files == ["opt/app/data.bin"])

            // A file that is not JSON is no profile either.
            try Data("not json".utf8).write(to: URL(fileURLWithPath: StartupProfile.path(for: manifest, storeRoot: store)))
            #expect(StartupProfile.load(for: manifest, storeRoot: store) == nil)
        }
    }
}
