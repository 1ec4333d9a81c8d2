import Foundation
import OCI
import Testing
import TestSupport

@testable import ContentStore

#if canImport(Glibc)
import Glibc
#endif

/// Directories that hold runnable image content or container state are private to their owner.
@Suite(.tags(.unit)) struct PrivateDirectoryTests {
    @Test func newDirectoryIsMode0700() throws {
        let directory = try ScratchDirectory()
        let path = directory.sub("private")
        try ContentStore.makePrivateDirectory(path)
        #expect(mode(of: path) == 0o700)
    }

    @Test func existingOpenDirectoryOwnedByUsIsNarrowed() throws {
        let directory = try ScratchDirectory()
        let path = directory.sub("old")
        #expect(mkdir(path, 0o755) == 0)
        #expect(chmod(path, 0o755) == 0)
        try ContentStore.makePrivateDirectory(path)
        #expect(mode(of: path) == 0o700)
    }

    @Test(.enabled(if: geteuid() == 0, "needs root to give a directory to another user"))
    func directoryOwnedByAnotherUserIsLeftAlone() throws {
        let directory = try ScratchDirectory()
        let path = directory.sub("theirs")
        #expect(mkdir(path, 0o755) == 0)
        #expect(chmod(path, 0o755) == 0)
        #expect(chown(path, 65534, 65534) == 0)
        try ContentStore.makePrivateDirectory(path)
        #expect(mode(of: path) == 0o755)
    }

    @Test func fileInTheWayIsAnError() throws {
        let directory = try ScratchDirectory()
        let path = directory.sub("file")
        #expect(FileManager.default.createFile(atPath: path, contents: Data()))
        #expect(throws: StoreError.self) { try ContentStore.makePrivateDirectory(path) }
    }

    @Test func openingAnOldStoreNarrowsItsPrivateDirectories() throws {
        let directory = try ScratchDirectory()
        for name in ContentStore.privateDirectories {
            #expect(mkdir(directory.sub(name), 0o755) == 0)
            #expect(chmod(directory.sub(name), 0o755) == 0)
        }
        _ = try ContentStore(root: directory.path)
        for name in ContentStore.privateDirectories { #expect(mode(of: directory.sub(name)) == 0o700, "\(name)") }
        #expect(mode(of: directory.sub("layers/sha256")) == 0o700)
        // The registry's bytes stay readable for other tools.
        #expect(mode(of: directory.sub("blobs/sha256")) & 0o005 == 0o005)
    }
}

/// `AtomicFile`: a file is replaced whole (temporary file, fsync, rename), so a reader sees the old content or the
/// new, never a mix.
@Suite(.tags(.unit)) struct AtomicFileTests {
    @Test func writeReplacesTheContentAndLeavesNoTemporaryFile() throws {
        let directory = try ScratchDirectory()
        let path = directory.sub("index.json")
        try AtomicFile.write(bytes("old"), to: path)
        try AtomicFile.write(bytes("new content"), to: path, mode: 0o600)
        #expect(FileManager.default.contents(atPath: path) == Data("new content".utf8))
        #expect(mode(of: path) == 0o600)
        #expect(listing(directory.path) == ["index.json"])
    }

    @Test func readersSeeTheOldOrTheNewContentNeverAMix() async throws {
        let directory = try ScratchDirectory()
        let path = directory.sub("file")
        let versions = [[UInt8](repeating: UInt8(ascii: "a"), count: 256 << 10), [UInt8](repeating: UInt8(ascii: "b"), count: 128 << 10)]
        try AtomicFile.write(versions[0], to: path)
        let writerDone = Counter()
        async let written: Void = onThread {
            defer { writerDone.increment() }
            for round in 1...30 { try AtomicFile.write(versions[round % 2], to: path) }
        }
        let reads = try await onThread { () -> [Int] in
            var seen = [0, 0, 0]
            repeat {
                let content = [UInt8](FileManager.default.contents(atPath: path) ?? Data())
                seen[versions.firstIndex(of: content) ?? 2] += 1
            } while writerDone.value == 0
            return seen
        }
        try await written
        #expect(reads[2] == 0, "a reader saw a partial file")
        #expect(reads[0] + reads[1] > 0)
    }

    @Test func failedReplaceKeepsTheTargetAndLeavesNoTemporaryFile() throws {
        let directory = try ScratchDirectory()
        // A non-empty directory cannot be replaced by a rename: the write fails after its temporary file exists.
        let target = directory.sub("target")
        #expect(mkdir(target, 0o755) == 0)
        #expect(FileManager.default.createFile(atPath: "\(target)/inside", contents: Data("kept".utf8)))
        #expect(throws: StoreError.self) { try AtomicFile.write(bytes("new"), to: target) }
        #expect(FileManager.default.contents(atPath: "\(target)/inside") == Data("kept".utf8))
        #expect(listing(directory.path) == ["target"])
    }

    @Test func parentOfAPath() {
        #expect(AtomicFile.parent(of: "/store/index.json") == "/store")
        #expect(AtomicFile.parent(of: "/index.json") == "/")
        #expect(AtomicFile.parent(of: "index.json") == ".")
    }
}

/// The extracted-layer cache publishes a layer only when its extraction produced the promised diffID.
@Suite(.tags(.unit)) struct LayerDirectoryTests {
    @Test func layerIsPublishedOnceWhenItsDiffIDMatches() async throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let diffID = Digest.sha256(of: bytes("a layer's tar"))
        let extracted = try await store.ensureLayerDirectory(diffID) { staging in
            #expect(FileManager.default.createFile(atPath: "\(staging)/file", contents: Data("x".utf8)))
            return diffID
        }
        #expect(extracted)
        #expect(store.hasLayerDirectory(diffID))
        #expect(FileManager.default.contents(atPath: "\(store.layerDirectory(diffID))/file") == Data("x".utf8))
        let again = try await store.ensureLayerDirectory(diffID) { _ in
            Issue.record("a cached layer is not extracted again")
            return diffID
        }
        #expect(!again)
    }

    @Test func extractionWithAnotherDiffIDLeavesNothing() async throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let promised = Digest.sha256(of: bytes("promised"))
        await #expect {
            try await store.ensureLayerDirectory(promised) { staging in
                #expect(FileManager.default.createFile(atPath: "\(staging)/file", contents: Data()))
                return .sha256(of: bytes("something else"))
            }
        } throws: { error in
            guard case StoreError.corrupt = error else { return false }
            return true
        }
        #expect(!store.hasLayerDirectory(promised))
        #expect(listing(directory.sub("ingest")).allSatisfy { $0.hasSuffix(".lock") })
    }
}

/// `gc` keeps what a name reaches and removes the rest.
@Suite(.tags(.unit)) struct CollectionTests {
    @Test func unreachableBlobsGoAndNamedImagesStay() throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let layer = try store.writeBlob(bytes("layer bytes"), mediaType: MediaType.ociLayer)
        let config = ImageConfig(platform: Platform(os: "linux", architecture: "amd64"), config: nil, diffIDs: [layer.digest])
        let configDescriptor = try store.writeBlob(Array(try JSONEncoder.canonical.encode(config)), mediaType: MediaType.ociConfig)
        let manifest = try store.writeBlob(
            Array(try JSONEncoder.canonical.encode(Manifest(config: configDescriptor, layers: [layer]))), mediaType: MediaType.ociManifest)
        try store.setImage(named: "kept", to: manifest)
        let orphan = try store.writeBlob(bytes("nobody names me"), mediaType: MediaType.ociLayer)

        let preview = try store.collectGarbage(dryRun: true)
        #expect(preview.removedBlobs == 1)
        #expect(store.hasBlob(orphan))

        let report = try store.collectGarbage()
        #expect(report.removedBlobs == 1)
        #expect(report.freedBytes == orphan.size)
        #expect(!store.hasBlob(orphan))
        for kept in [layer, configDescriptor, manifest] { #expect(store.hasBlob(kept)) }
    }
}
