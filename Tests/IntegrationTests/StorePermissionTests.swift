import Archive
import ContentStore
import Foundation
import OCI
import Slipway
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A store filled by root must not hand other users an image's setuid-root binaries or world-writable device nodes:
/// the directories that hold extracted layers and run state are private to the store's owner, as containerd's are.
@Suite(.tags(.integration), .enabled(if: geteuid() == 0, "needs root: the leak is root's store seen by another user"), .serialized)
struct StorePermissionTests {
    /// An image whose one layer holds a setuid-root shell stand-in and a 0666 character device.
    func makeHostileLayout(_ scratch: ScratchDirectory) throws -> ContentStore {
        let layout = try ContentStore(root: scratch.sub("layout"))
        let mtime = TarTimestamp(seconds: 1_767_225_600)
        var builder = ImageBuilder(store: layout)
        let program = Array("#!/bin/sh\nid -u\n".utf8)
        try builder.addLayer(
            [
                (TarHeader(name: "bin/", type: .directory, mode: 0o755, mtime: mtime), []),
                (TarHeader(name: "bin/rootshell", type: .regular, mode: 0o4755, size: Int64(program.count), mtime: mtime), program),
                (TarHeader(name: "dev/", type: .directory, mode: 0o755, mtime: mtime), []),
                (TarHeader(name: "dev/mem-like", type: .characterDevice, mode: 0o666, mtime: mtime, devMajor: 1, devMinor: 3), []),
            ], comment: "setuid binary and a world-writable device")
        _ = try builder.commit(name: "hostile", config: ImageConfig.ContainerConfig(Cmd: ["/bin/rootshell"]), platform: .host)
        return layout
    }

    /// Runs `command` as the unprivileged user nobody.
    func asNobody(_ command: [String]) async throws -> ProcessResult {
        try await run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "--"] + command)
    }

    func mode(_ path: String) -> mode_t? {
        var info = stat()
        return stat(path, &info) == 0 ? info.st_mode & 0o7777 : nil
    }

    @Test func extractedLayersAreOutOfOtherUsersReach() async throws {
        let scratch = try ScratchDirectory()
        chmod(scratch.path, 0o755)
        let layout = try makeHostileLayout(scratch)
        try await RegistryProcess.withRegistry { registry in
            let reference = "\(registry.host)/hostile:v1"
            try #require(try await run(slipwayBinary, ["copy", "-q", "oci:\(layout.root):hostile", reference]).status == 0)
            let store = scratch.sub("store")
            let pulled = try await run(slipwayBinary, ["pull", "-q", "--unpack-layers", "--store", store, reference])
            try #require(pulled.status == 0, "pull: \(pulled.stderr)")

            let layers = try FileManager.default.contentsOfDirectory(atPath: "\(store)/layers/sha256")
            try #require(layers.count == 1)
            let rootshell = "\(store)/layers/sha256/\(layers[0])/bin/rootshell"
            // The content is there, with its image mode, for root's own overlay mounts...
            #expect(mode(rootshell) == 0o4755)
            #expect(mode("\(store)/layers/sha256/\(layers[0])/dev/mem-like") == 0o666)
            // ...but no other user can reach it.
            for name in ["ingest", "layers", "run"] {
                #expect(mode("\(store)/\(name)") == 0o700, "\(name) is \(String(mode("\(store)/\(name)") ?? 0, radix: 8))")
            }
            let attempt = try await asNobody([rootshell])
            #expect(attempt.status != 0 && attempt.stderr.contains("Permission denied"), "\(attempt.status) \(attempt.stdout) \(attempt.stderr)")
            await #expect(try asNobody(["stat", "\(store)/layers/sha256/\(layers[0])/dev/mem-like"]).status != 0)
            // What other tools read in a shared store stays readable: the layout's index and blobs.
            await #expect(try asNobody(["cat", "\(store)/index.json"]).status == 0)
        }
    }

    @Test func aStoreLeftOpenByAnOlderVersionIsNarrowed() async throws {
        let scratch = try ScratchDirectory()
        let store = scratch.sub("store")
        for name in ["ingest", "layers", "run"] {
            try FileManager.default.createDirectory(atPath: "\(store)/\(name)", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        }
        let listed = try await run(slipwayBinary, ["images", "--store", store])
        #expect(listed.status == 0, "\(listed.stderr)")
        for name in ["ingest", "layers", "run"] {
            #expect(mode("\(store)/\(name)") == 0o700, "\(name)")
        }
    }
}
