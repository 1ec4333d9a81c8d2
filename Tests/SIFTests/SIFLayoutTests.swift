import Foundation
import Testing
import TestSupport

@testable import SIF

@Suite("SIF layout and types", .tags(.unit))
struct SIFLayoutTests {
    @Test func archCodes() {
        #expect(SIFArch(goArch: "amd64") == .amd64)
        #expect(SIFArch(goArch: "amd64").code == "02")
        #expect(SIFArch(goArch: "arm64").code == "04")
        #expect(SIFArch(goArch: "riscv64").code == "12")
        #expect(SIFArch(goArch: "sparc").code == "00")
        #expect(SIFArch.arm64.goArch == "arm64")
        #expect(SIFArch(code: "99").goArch == "unknown")
        #expect(SIFArch.amd64.description == "amd64")
        #expect(SIFArch.amd64.bytes == [0x30, 0x32, 0])
    }

    @Test func enumRawValues() {
        #expect(SIFDataType.definitionFile.rawValue == 0x4001)
        #expect(SIFDataType.partition.rawValue == 0x4004)
        #expect(SIFDataType.genericJSON.rawValue == 0x4006)
        #expect(SIFDataType.ociBlob.rawValue == 0x400B)
        #expect(SIFFilesystem.encryptedSquashfs.rawValue == 5)
        #expect(SIFPartitionType.overlay.rawValue == 4)
    }

    @Test func defaultLayout() {
        var b = SIFBuilder()
        #expect(b.id.count == 16)
        #expect(b.dataOffset == 32176)
        #expect(b.partitionOffset == 32768)
        b.addObject(.definitionFile, name: "", bytes: [UInt8](repeating: 1, count: 592))
        #expect(b.partitionOffset == 32768)
        b.addObject(.genericJSON, name: "x", bytes: [2])
        #expect(b.partitionOffset == 36864)
        #expect(SIFBuilder(descriptorCapacity: 8).dataOffset == 4096 + 8 * 585)
        #expect(SIFBuilder().id != SIFBuilder().id)
    }

    @Test func encodedPrefixRoundTrips() throws {
        var b = SIFBuilder(createdAt: 42, id: Array(1...16))
        b.addObject(.definitionFile, name: "", bytes: Array("bootstrap: docker\n".utf8))
        b.addObject(.ociBlob, name: "blob", bytes: Array("abc".utf8))
        let prefix = try b.encodePrefix(
            partition: SIFPartitionInfo(arch: .arm64), partitionSize: 4096, partitionName: "rootfs")
        #expect(prefix.count == Int(b.partitionOffset))
        let sif = try SIFFile(path: "mem", prefix: prefix, fileSize: b.partitionOffset + 4096)
        #expect(sif.header.id == Array(1...16))
        #expect(sif.header.idString == "01020304-0506-0708-090a-0b0c0d0e0f10")
        #expect(sif.header.createdAt == 42 && sif.header.modifiedAt == 42)
        #expect(sif.header.arch == .arm64)
        #expect(sif.header.descriptorsFree == 45)
        #expect(sif.header.dataSize == b.partitionOffset + 4096 - 32176)
        #expect(sif.descriptors.map(\.slot) == [0, 1, 2])
        #expect(sif.descriptors.allSatisfy { $0.createdAt == 42 && $0.modifiedAt == 42 })
        let blob = try #require(sif.object(named: "blob"))
        #expect(blob.ociDigest == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let part = try sif.requirePrimaryPartition()
        #expect(part.partition == SIFPartitionInfo(filesystem: .squashfs, type: .primarySystem, arch: .arm64))
        #expect(Array(part.extra[0..<11]) == [1, 0, 0, 0, 2, 0, 0, 0, 0x30, 0x34, 0])
        // Raw group ID on disk carries the mask.
        let rawGroup: UInt32 = readLE(prefix, 4096 + 9)
        #expect(rawGroup == 0xF000_0001)
    }

    @Test func errorDescriptionsCarryContext() {
        #expect(SIFError.notSIF(path: "/x.sif").description.contains("/x.sif"))
        #expect(SIFError.unsupportedVersion("02").description.contains("02"))
        #expect(SIFError.io(path: "/y", operation: "open", errno: 2).description.contains("open"))
        #expect(SIFError.truncated(path: "/z", what: "descriptor table").description.contains("descriptor table"))
    }
}
