import Foundation
import Testing
import TestSupport

@testable import SIF

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A SIF made by SIFBuilder with fake partition bytes (no external tools needed).
func makeFakeImage(in dir: TempDir, partition: SIFPartitionInfo = SIFPartitionInfo(arch: .amd64)) throws -> String {
    var builder = SIFBuilder(createdAt: 1_700_000_000)
    builder.addObject(.definitionFile, name: "", bytes: Array(definitionText.utf8))
    builder.addObject(.genericJSON, name: "oci-config.json", bytes: Array(ociConfigJSON.utf8))
    let path = dir.sub("fake.sif")
    let partitionBytes = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 7) }
    var file = [UInt8](repeating: 0, count: Int(builder.partitionOffset))
    file += partitionBytes
    try writeFile(path, file)
    try builder.write(to: path, partition: partition, partitionSize: Int64(partitionBytes.count))
    return path
}

@Suite("SIF bad input", .tags(.unit))
struct SIFBadInputTests {
    @Test func randomBytesAreNotSIF() throws {
        let dir = try TempDir()
        let path = dir.sub("random.bin")
        var rng = SystemRandomNumberGenerator()
        try writeFile(path, (0..<8192).map { _ in UInt8.random(in: 0...255, using: &rng) })
        #expect(sifError { () throws(SIFError) in _ = try SIFFile(path: path) } == .notSIF(path: path))
        let short = dir.sub("short.bin")
        try writeFile(short, Array("hello".utf8))
        #expect(sifError { () throws(SIFError) in _ = try SIFFile(path: short) } == .notSIF(path: short))
    }

    @Test func emptyFileIsNotSIF() throws {
        let dir = try TempDir()
        let path = dir.sub("empty.sif")
        try writeFile(path, [])
        #expect(sifError { () throws(SIFError) in _ = try SIFFile(path: path) } == .notSIF(path: path))
    }

    @Test func missingFileIsAnIOError() throws {
        let dir = try TempDir()
        let path = dir.sub("missing.sif")
        #expect(sifError { () throws(SIFError) in _ = try SIFFile(path: path) } == .io(path: path, operation: "open", errno: ENOENT))
    }

    @Test func truncatedHeader() throws {
        let dir = try TempDir()
        let path = try makeFakeImage(in: dir)
        try truncateFile(path, to: 100)
        guard case .truncated(let p, let what)? = sifError({ () throws(SIFError) in _ = try SIFFile(path: path) }) else {
            Issue.record("expected .truncated")
            return
        }
        #expect(p == path)
        #expect(what.contains("header"))
    }

    @Test func truncatedInsideDescriptorTable() throws {
        let dir = try TempDir()
        let path = try makeFakeImage(in: dir)
        try truncateFile(path, to: 4096 + 1000)
        let error = sifError { () throws(SIFError) in _ = try SIFFile(path: path) }
        guard case .truncated(let p, let what)? = error else {
            Issue.record("expected .truncated, got \(String(describing: error))")
            return
        }
        #expect(p == path)
        #expect(what.contains("descriptor table"))
        // The same through the prefix API, as a Range-fetching reader would see it.
        let prefix = try readFile(path)
        let prefixError = sifError { () throws(SIFError) in _ = try SIFFile(path: path, prefix: prefix, fileSize: 1 << 30) }
        guard case .truncated(_, let prefixWhat)? = prefixError else {
            Issue.record("expected .truncated, got \(String(describing: prefixError))")
            return
        }
        #expect(prefixWhat.contains("descriptor table"))
    }

    @Test func noPrimaryPartitionWhenOnlyADataPartition() throws {
        let dir = try TempDir()
        let path = try makeFakeImage(in: dir, partition: SIFPartitionInfo(type: .data, arch: .arm64))
        let sif = try SIFFile(path: path)
        #expect(sif.header.arch == .unknown)  // only a primary partition sets the header arch
        #expect(sif.objects(ofType: .partition).first?.partition?.type == .data)
        #expect(sifError { () throws(SIFError) in _ = try sif.requirePrimaryPartition() } == .noPrimaryPartition(path: path))
    }

    @Test func partitionPastEndOfFile() throws {
        let dir = try TempDir()
        let path = try makeFakeImage(in: dir)
        let offset = try SIFFile(path: path).requirePrimaryPartition().offset
        try truncateFile(path, to: offset + 100)
        let error = sifError { () throws(SIFError) in _ = try SIFFile(path: path) }
        guard case .truncated(let p, let what)? = error else {
            Issue.record("expected .truncated, got \(String(describing: error))")
            return
        }
        #expect(p == path)
        #expect(what.contains("object 3"))
        #expect(what.contains("rootfs"))
    }

    @Test func objectSizePointingPastEndOfFile() throws {
        let dir = try TempDir()
        let path = try makeFakeImage(in: dir)
        // Descriptor slot 1 (object 2, oci-config.json): Size field at +25.
        var huge = [UInt8](repeating: 0, count: 8)
        writeLE(Int64(1 << 40), into: &huge, at: 0)
        try patchFile(path, at: 4096 + 585 + 25, with: huge)
        let error = sifError { () throws(SIFError) in _ = try SIFFile(path: path) }
        guard case .truncated(_, let what)? = error else {
            Issue.record("expected .truncated, got \(String(describing: error))")
            return
        }
        #expect(what.contains("object 2"))
        #expect(what.contains("oci-config.json"))
        #expect(error?.description.contains("oci-config.json") == true)
    }

    @Test func negativeOffsetIsInvalid() throws {
        let dir = try TempDir()
        let path = try makeFakeImage(in: dir)
        var negative = [UInt8](repeating: 0, count: 8)
        writeLE(Int64(-5), into: &negative, at: 0)
        try patchFile(path, at: 4096 + 17, with: negative)
        guard case .invalid(let message)? = sifError({ () throws(SIFError) in _ = try SIFFile(path: path) }) else {
            Issue.record("expected .invalid")
            return
        }
        #expect(message.contains("object 1"))
    }

    @Test func wrongVersion() throws {
        let dir = try TempDir()
        let path = try makeFakeImage(in: dir)
        try patchFile(path, at: 42, with: Array("02".utf8) + [0])
        #expect(sifError { () throws(SIFError) in _ = try SIFFile(path: path) } == .unsupportedVersion("02"))
    }

    @Test func descriptorCountOutOfRange() throws {
        let dir = try TempDir()
        let path = try makeFakeImage(in: dir)
        var total = [UInt8](repeating: 0, count: 8)
        writeLE(Int64(-1), into: &total, at: 0)
        try patchFile(path, at: 88, with: total)
        guard case .invalid? = sifError({ () throws(SIFError) in _ = try SIFFile(path: path) }) else {
            Issue.record("expected .invalid")
            return
        }
    }

    @Test func readRefusesObjectsOverTheLimit() throws {
        let dir = try TempDir()
        let path = try makeFakeImage(in: dir)
        let sif = try SIFFile(path: path)
        let primary = try sif.requirePrimaryPartition()
        guard case .invalid(let message)? = sifError({ () throws(SIFError) in _ = try sif.read(primary, limit: 4096) }) else {
            Issue.record("expected .invalid")
            return
        }
        #expect(message.contains("limit"))
        #expect(try sif.read(primary, limit: 8192).count == 8192)
    }

    @Test func builderRejectsBadInput() throws {
        let dir = try TempDir()
        let path = dir.sub("x.sif")
        let part = SIFPartitionInfo(arch: .amd64)
        let longScript = SIFBuilder(launchScript: String(repeating: "#", count: 32))
        guard case .invalid? = sifError({ () throws(SIFError) in try longScript.write(to: path, partition: part, partitionSize: 0) }) else {
            Issue.record("long launch script accepted")
            return
        }
        let badID = SIFBuilder(id: [1, 2, 3])
        guard case .invalid? = sifError({ () throws(SIFError) in try badID.write(to: path, partition: part, partitionSize: 0) }) else {
            Issue.record("short ID accepted")
            return
        }
        var full = SIFBuilder(descriptorCapacity: 1)
        full.addObject(.definitionFile, name: "", bytes: [1])
        guard case .invalid? = sifError({ () throws(SIFError) in try full.write(to: path, partition: part, partitionSize: 0) }) else {
            Issue.record("over-capacity accepted")
            return
        }
        var longName = SIFBuilder()
        longName.addObject(.generic, name: String(repeating: "n", count: 129), bytes: [1])
        guard case .invalid? = sifError({ () throws(SIFError) in try longName.write(to: path, partition: part, partitionSize: 0) }) else {
            Issue.record("long name accepted")
            return
        }
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}
