import ContentStore
import Foundation
import OCI
import Testing
import TestSupport

/// Blobs enter the store only when their bytes match their digest, and are read back verified.
@Suite(.tags(.unit)) struct BlobTests {
    @Test func writtenBlobReadsBackUnderItsDigest() throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let content = bytes(#"{"hello":"store"}"#)
        let written = try store.writeBlob(content, mediaType: MediaType.ociConfig)
        #expect(written == descriptor(of: content, mediaType: MediaType.ociConfig))
        #expect(store.hasBlob(written))
        #expect(try store.readBlob(written.digest) == content)
        // A descriptor is trusted only with its length.
        #expect(!store.hasBlob(Descriptor(mediaType: written.mediaType, digest: written.digest, size: written.size + 1)))
    }

    @Test func blobWithAWrongExpectedDigestIsRefusedAndLeavesNothing() throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let content = bytes("the real bytes")
        let claimed = Digest.sha256(of: bytes("other bytes"))
        #expect {
            try store.writeBlob(content, mediaType: MediaType.ociConfig, expected: claimed)
        } throws: { error in
            guard case StoreError.verification(let expected, let actual, _) = error else { return false }
            return expected == claimed && actual == .sha256(of: content)
        }
        #expect(listing(directory.sub("blobs/sha256")).isEmpty)
    }

    @Test func sha512DigestsAreVerifiedWithSha512() throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let content = bytes("hashed with sha512")
        var hasher = DigestHasher(.sha512)
        hasher.update(content)
        let digest = hasher.finalize()
        let written = try store.writeBlob(content, mediaType: MediaType.ociConfig, expected: digest)
        #expect(written.digest == digest)
        #expect(try store.readBlob(digest) == content)
        #expect(FileManager.default.fileExists(atPath: directory.sub("blobs/sha512/\(digest.hex)")))
    }

    @Test func damagedBlobIsRefusedOnRead() throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let written = try store.writeBlob(bytes("original content"), mediaType: MediaType.ociConfig)
        try Data("damaged content!".utf8).write(to: URL(fileURLWithPath: store.blobPath(written.digest)))
        #expect {
            try store.readBlob(written.digest)
        } throws: { error in
            guard case StoreError.corrupt(let path, _) = error else { return false }
            return path == store.blobPath(written.digest)
        }
    }

    @Test func missingBlobIsNotFound() throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        #expect {
            try store.readBlob(.sha256(of: bytes("never written")))
        } throws: { error in
            guard case StoreError.notFound = error else { return false }
            return true
        }
    }

    @Test func blobLargerThanTheReadLimitIsRefused() throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let written = try store.writeBlob([UInt8](repeating: 7, count: 100), mediaType: MediaType.ociLayer)
        #expect(try store.readBlob(written.digest, limit: 100).count == 100)
        #expect(throws: StoreError.self) { try store.readBlob(written.digest, limit: 99) }
    }

    @Test func adoptMovesAFileInOnlyWithTheDescribedSize() throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let content = bytes("a layer written elsewhere")
        let staged = store.temporaryPath()
        try Data(content).write(to: URL(fileURLWithPath: staged))
        var wrongSize = descriptor(of: content)
        wrongSize.size += 1
        #expect(throws: StoreError.self) { try store.adopt(staged, as: wrongSize) }
        #expect(!store.hasBlob(wrongSize))
        try store.adopt(staged, as: descriptor(of: content))
        #expect(try store.readBlob(.sha256(of: content)) == content)
        #expect(!FileManager.default.fileExists(atPath: staged))
    }
}

/// `ingest`: a download into a partial file that becomes a blob only when complete and verified, resumes where an
/// interrupted attempt stopped, and runs once however many ask for the blob at the same time.
@Suite(.tags(.unit)) struct IngestTests {
    let content = DemoBytes.make(count: 3000)

    @Test func fetchedBlobIsCommitted() async throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let blob = descriptor(of: content)
        let outcome = try await store.ingest(blob) { sink in try write(content, into: sink) }
        #expect(outcome == .fetched(bytes: Int64(content.count)))
        #expect(store.hasBlob(blob))
        let again = try await store.ingest(blob) { _ in Issue.record("a present blob is not fetched again") }
        #expect(again == .present)
    }

    @Test func sinkThatDoesNotMatchTheDescriptorIsRefusedAndLeavesNoBlob() async throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let blob = descriptor(of: content)
        var tampered = content
        tampered[1000] ^= 0xff
        await #expect {
            try await store.ingest(blob) { sink in try write(tampered, into: sink) }
        } throws: { error in
            guard case StoreError.verification(let expected, let actual, let size) = error else { return false }
            // Regression: the size reported was the sink's after it was emptied, always 0.
            return expected == blob.digest && actual == .sha256(of: tampered) && size == Int64(content.count)
        }
        #expect(!store.hasBlob(blob))
        #expect(!FileManager.default.fileExists(atPath: store.blobPath(blob.digest)))
        // Wrong bytes are not resumed from: the next attempt starts again from the first byte.
        let outcome = try await store.ingest(blob) { sink in
            #expect(sink.count == 0)
            try write(content, into: sink)
        }
        #expect(outcome == .fetched(bytes: Int64(content.count)))
    }

    @Test func shortSinkIsRefused() async throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let blob = descriptor(of: content)
        await #expect(throws: StoreError.self) {
            try await store.ingest(blob) { sink in try write(Array(content.prefix(100)), into: sink) }
        }
        #expect(!store.hasBlob(blob))
    }

    @Test func interruptedIngestResumesFromTheSinkCount() async throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let blob = descriptor(of: content)
        await interruptIngest(store, blob, after: 1200, of: content)
        #expect(!store.hasBlob(blob))
        let outcome = try await store.ingest(blob) { sink in
            #expect(sink.count == 1200)
            #expect(sink.resumedBytes == 1200)
            try write(Array(content[Int(sink.count)...]), into: sink)
        }
        #expect(outcome == .fetched(bytes: Int64(content.count - 1200)))
        #expect(try store.readBlob(blob.digest) == content)
    }

    @Test func concurrentIngestsOfOneBlobFetchItOnce() async throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let blob = descriptor(of: content)
        let content = self.content
        let fetches = Counter()
        // The first ingest holds the blob's lock until the second has found it busy, so both really overlap.
        let secondIsWaiting = Event()
        let outcomes = try await withThrowingTaskGroup(of: ContentStore.IngestOutcome.self) { group in
            for _ in 0..<2 {
                group.addTask {
                    try await store.ingest(blob, onWait: { secondIsWaiting.signal() }) { sink in
                        fetches.increment()
                        await secondIsWaiting.wait()
                        try write(content, into: sink)
                    }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(fetches.value == 1)
        #expect(outcomes.contains(.fetched(bytes: Int64(content.count))))
        #expect(outcomes.contains(.fetchedByOther))
        #expect(try store.readBlob(blob.digest) == content)
    }

    @Test func discardPartialRemovesWhatAnInterruptedIngestLeft() async throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let blob = descriptor(of: content)
        await interruptIngest(store, blob, after: 500, of: content)
        store.discardPartial(blob.digest)
        _ = try await store.ingest(blob) { sink in
            #expect(sink.count == 0)
            try write(content, into: sink)
        }
        #expect(store.hasBlob(blob))
    }
}

/// Deterministic filler bytes (not all equal, so a misplaced byte changes the digest).
enum DemoBytes {
    static func make(count: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 8) } }
}
