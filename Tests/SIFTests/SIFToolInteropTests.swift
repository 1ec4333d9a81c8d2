import Foundation
import Testing
import TestSupport

@testable import SIF

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let definitionText = "bootstrap: docker\nfrom: alpine:3.20\n"
let ociConfigJSON = #"{"Env":["PATH=/usr/local/bin:/usr/bin:/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/"}"#

/// A SIF written by SIFBuilder around a squashfs that `mksquashfs -o OFFSET` wrote into the same file.
struct BuiltImage {
    let dir: TempDir
    let path: String
    let tree: String
    let builder: SIFBuilder
    let partitionSize: Int64
}

func buildImageWithMksquashfs() async throws -> BuiltImage {
    let dir = try TempDir()
    let tree = dir.sub("tree")
    try makeTree(in: tree)
    var builder = SIFBuilder(createdAt: 1_700_000_000)
    builder.addObject(.definitionFile, name: "", bytes: Array(definitionText.utf8))
    builder.addObject(.genericJSON, name: "oci-config.json", bytes: Array(ociConfigJSON.utf8))
    let path = dir.sub("OUT.sif")
    // mksquashfs opens OUT with O_TRUNC and leaves 0 ..< offset as a hole, so it has to run first.
    try await runChecked("mksquashfs", [
        tree, path, "-noappend", "-comp", "gzip", "-o", String(builder.partitionOffset), "-quiet",
        "-no-progress",
    ])
    let partitionSize = try fileSize(path) - builder.partitionOffset
    try builder.write(to: path, partition: SIFPartitionInfo(arch: .amd64), partitionSize: partitionSize)
    return BuiltImage(dir: dir, path: path, tree: tree, builder: builder, partitionSize: partitionSize)
}

@Suite("SIF interop with siftool, mksquashfs, unsquashfs", .tags(.integration))
struct SIFToolInteropTests {
    @Test(.enabled(if: haveSquashTools))
    func mksquashfsOffsetWritesInPlaceAndTruncates() async throws {
        // The property SIFBuilder relies on: `mksquashfs -o N` puts a normal squashfs image at byte N of the
        // output (identical to one written at 0), and the file ends where the image ends.
        let dir = try TempDir()
        try makeTree(in: dir.sub("tree"))
        try writeFile(dir.sub("out.img"), [UInt8](repeating: 0xAA, count: 100_000))
        try await runChecked("mksquashfs", [
            dir.sub("tree"), dir.sub("out.img"), "-noappend", "-comp", "gzip", "-o", "36864",
            "-quiet", "-no-progress", "-mkfs-time", "0", "-all-time", "0",
        ])
        try await runChecked("mksquashfs", [
            dir.sub("tree"), dir.sub("plain.sqfs"), "-noappend", "-comp", "gzip", "-quiet",
            "-no-progress", "-mkfs-time", "0", "-all-time", "0",
        ])
        let out = try readFile(dir.sub("out.img"))
        let plain = try readFile(dir.sub("plain.sqfs"))
        #expect(out.count == 36864 + plain.count)
        #expect(Array(out[36864...]) == plain)
        #expect(plain.count % 4096 == 0)
        // The old contents before the offset are gone (the file was truncated): zeros, not 0xAA.
        #expect(out[0..<36864].allSatisfy { $0 == 0 })
    }

    @Test(.enabled(if: haveSquashTools && haveSiftool))
    func builderImageIsReadBySiftool() async throws {
        let image = try await buildImageWithMksquashfs()
        let path = image.path
        let offset = image.builder.partitionOffset
        #expect(offset == 32768)
        #expect(image.partitionSize > 0 && image.partitionSize % 4096 == 0)

        // File mode 0755.
        var st = stat()
        #expect(stat(path, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o755)

        // Our own reader.
        let sif = try SIFFile(path: path)
        #expect(sif.header.launchScript == "#!/usr/bin/env run-singularity\n")
        #expect(sif.header.arch == .amd64)
        #expect(sif.header.descriptorsTotal == 48)
        #expect(sif.header.descriptorsFree == 45)
        #expect(sif.header.dataOffset == 32176)
        #expect(sif.header.dataSize == offset + image.partitionSize - 32176)
        #expect(sif.descriptors.map(\.dataType) == [.definitionFile, .genericJSON, .partition])
        #expect(sif.descriptors.map(\.id) == [1, 2, 3])
        #expect(sif.descriptors.allSatisfy { $0.groupID == 1 && $0.linkedID == 0 })
        let primary = try sif.requirePrimaryPartition()
        #expect(primary.offset == offset)
        #expect(primary.size == image.partitionSize)
        let jsonEnd = Int64(32176 + definitionText.utf8.count + ociConfigJSON.utf8.count)
        #expect(primary.sizeWithPadding == offset - jsonEnd + image.partitionSize)
        #expect(primary.name == "rootfs")
        #expect(primary.partition == SIFPartitionInfo(filesystem: .squashfs, type: .primarySystem, arch: .amd64))
        #expect(try sif.read(sif.objects(ofType: .genericJSON)[0]) == Array(ociConfigJSON.utf8))

        // siftool header
        let header = try await runChecked("siftool", ["header", path]).stdout
        #expect(siftoolField(header, "Version") == "01")
        #expect(siftoolField(header, "Primary Architecture") == "amd64")
        #expect(siftoolField(header, "ID") == sif.header.idString)
        #expect(siftoolField(header, "Descriptors Free") == "45")
        #expect(siftoolField(header, "Descriptors Total") == "48")
        #expect(siftoolField(header, "Descriptors Offset") == "4096")
        #expect(siftoolField(header, "Data Offset") == "32176")

        // siftool list: ids, types, positions
        let list = try await runChecked("siftool", ["list", path]).stdout
        let defPos = siftoolPosition(list, id: 1)
        #expect(defPos?.start == 32176)
        #expect(defPos?.end == 32176 + Int64(definitionText.utf8.count))
        #expect(defPos?.line.contains("Def.FILE") == true)
        let jsonPos = siftoolPosition(list, id: 2)
        #expect(jsonPos?.start == 32176 + Int64(definitionText.utf8.count))
        #expect(jsonPos?.end == jsonEnd)
        #expect(jsonPos?.line.contains("JSON.Generic") == true)
        let partPos = siftoolPosition(list, id: 3)
        #expect(partPos?.start == offset)
        #expect(partPos?.end == offset + image.partitionSize)
        #expect(partPos?.line.contains("FS (Squashfs/*System/amd64)") == true)

        // siftool info
        let info = try await runChecked("siftool", ["info", "3", path]).stdout
        #expect(siftoolField(info, "Data Type") == "FS")
        #expect(siftoolField(info, "ID") == "3")
        #expect(siftoolField(info, "Group ID") == "1")
        #expect(siftoolField(info, "Linked ID") == "NONE")
        #expect(siftoolField(info, "Offset") == String(offset))
        #expect(siftoolField(info, "Size") == String(image.partitionSize))
        #expect(siftoolField(info, "Filesystem Type") == "Squashfs")
        #expect(siftoolField(info, "Partition Type") == "*System")
        #expect(siftoolField(info, "Architecture") == "amd64")
        let jsonInfo = try await runChecked("siftool", ["info", "2", path]).stdout
        #expect(siftoolField(jsonInfo, "Data Type") == "JSON.Generic")
        #expect(siftoolField(jsonInfo, "Name") == "oci-config.json")
        #expect(siftoolField(jsonInfo, "Size") == String(ociConfigJSON.utf8.count))

        // siftool dump returns the exact bytes
        #expect(Array(try await runChecked("siftool", ["dump", "2", path]).stdout.utf8) == Array(ociConfigJSON.utf8))
        #expect(Array(try await runChecked("siftool", ["dump", "1", path]).stdout.utf8) == Array(definitionText.utf8))

        // The partition is a squashfs at the offset.
        let listing = try await runChecked("unsquashfs", ["-l", "-o", String(offset), path]).stdout
        #expect(listing.contains("squashfs-root/etc/hostname"))
        #expect(listing.contains("squashfs-root/usr/bin/hello"))
        #expect(listing.contains("squashfs-root/README"))
        let hostname = try await runChecked("unsquashfs", ["-o", String(offset), "-cat", path, "etc/hostname"]).stdout
        #expect(hostname == "slipway\n")
    }

    @Test(.enabled(if: haveSquashTools && getuid() == 0 && toolExists("mount")))
    func builderImageMountsWithLoopOffset() async throws {
        let image = try await buildImageWithMksquashfs()
        let mnt = image.dir.sub("mnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        let offset = try SIFFile(path: image.path).requirePrimaryPartition().offset
        try await runChecked("mount", ["-t", "squashfs", "-o", "loop,ro,offset=\(offset)", image.path, mnt])
        defer { detachMount(mnt) }
        #expect(try String(contentsOfFile: mnt + "/etc/hostname", encoding: .utf8) == "slipway\n")
        #expect(FileManager.default.fileExists(atPath: mnt + "/usr/bin/hello"))
    }

    @Test(.enabled(if: haveSquashTools && toolExists("squashfuse") && getuid() == 0 && FileManager.default.fileExists(atPath: "/dev/fuse")))
    func builderImageMountsWithSquashfuse() async throws {
        let image = try await buildImageWithMksquashfs()
        let mnt = image.dir.sub("fmnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        let offset = try SIFFile(path: image.path).requirePrimaryPartition().offset
        try await runChecked("squashfuse", ["-o", "ro,offset=\(offset)", image.path, mnt])
        defer { detachMount(mnt) }
        #expect(try String(contentsOfFile: mnt + "/etc/hostname", encoding: .utf8) == "slipway\n")
        #expect(FileManager.default.fileExists(atPath: mnt + "/README"))
    }

    @Test(.enabled(if: haveSquashTools && haveSiftool))
    func readsImageMadeBySiftool() async throws {
        let dir = try TempDir()
        try makeTree(in: dir.sub("tree"))
        let sqfs = dir.sub("X.sqfs")
        try await runChecked("mksquashfs", [dir.sub("tree"), sqfs, "-noappend", "-comp", "gzip", "-quiet", "-no-progress"])
        try writeFile(dir.sub("recipe.def"), definitionText)
        let path = dir.sub("A.sif")
        try await runChecked("siftool", ["new", path])
        try await runChecked("siftool", ["add", "--datatype", "1", path, dir.sub("recipe.def")])
        try await runChecked("siftool", [
            "add", "--datatype", "4", "--parttype", "2", "--partfs", "1", "--partarch", "2",
            "--groupid", "1", path, sqfs,
        ])

        let sif = try SIFFile(path: path)
        #expect(sif.header.arch == .amd64)
        #expect(sif.header.descriptorsTotal == 48)
        #expect(sif.header.descriptorsFree == 46)
        #expect(sif.descriptors.count == 2)
        let def = try #require(sif.objects(ofType: .definitionFile).first)
        #expect(def.id == 1)
        #expect(def.groupID == 0)  // siftool add defaults to no group
        #expect(try sif.read(def) == Array(definitionText.utf8))

        let primary = try #require(sif.primaryPartition)
        #expect(primary.id == 2)
        #expect(primary.groupID == 1)
        #expect(primary.partition == SIFPartitionInfo(filesystem: .squashfs, type: .primarySystem, arch: .amd64))
        #expect(primary.offset % 4096 == 0)
        #expect(primary.size == (try fileSize(sqfs)))
        #expect(primary.sizeWithPadding == primary.offset - (def.offset + def.size) + primary.size)
        #expect(sif.header.dataSize == primary.offset + primary.size - sif.header.dataOffset)

        let list = try await runChecked("siftool", ["list", path]).stdout
        let position = try #require(siftoolPosition(list, id: primary.id))
        #expect(position.start == primary.offset)
        #expect(position.end == primary.offset + primary.size)
        let defPosition = try #require(siftoolPosition(list, id: def.id))
        #expect(defPosition.start == def.offset && defPosition.end == def.offset + def.size)
        #expect(try sif.read(primary) == (try readFile(sqfs)))
    }

    /// Apart from the image ID, the times and the launch script, SIFBuilder writes the same bytes as
    /// sylabs/sif does for the same objects.
    @Test(.enabled(if: haveSquashTools && haveSiftool))
    func builderMatchesSiftoolByteForByte() async throws {
        let dir = try TempDir()
        try makeTree(in: dir.sub("tree"))
        let sqfs = dir.sub("X.sqfs")
        try await runChecked("mksquashfs", [dir.sub("tree"), sqfs, "-noappend", "-comp", "gzip", "-quiet", "-no-progress"])
        try writeFile(dir.sub("def"), definitionText)
        try writeFile(dir.sub("cfg"), ociConfigJSON)

        let reference = dir.sub("ref.sif")
        try await runChecked("siftool", ["new", reference])
        try await runChecked("siftool", ["add", "--datatype", "1", "--groupid", "1", "--filename", "def", reference, dir.sub("def")])
        try await runChecked("siftool", [
            "add", "--datatype", "6", "--groupid", "1", "--filename", "oci-config.json", reference,
            dir.sub("cfg"),
        ])
        try await runChecked("siftool", [
            "add", "--datatype", "4", "--parttype", "2", "--partfs", "1", "--partarch", "2",
            "--groupid", "1", "--filename", "rootfs", reference, sqfs,
        ])

        let ours = dir.sub("ours.sif")
        var builder = SIFBuilder(launchScript: "")
        builder.addObject(.definitionFile, name: "def", bytes: Array(definitionText.utf8))
        builder.addObject(.genericJSON, name: "oci-config.json", bytes: Array(ociConfigJSON.utf8))
        let squash = try readFile(sqfs)
        // Here the partition bytes are copied in by the test, before the header is written.
        let fd = open(ours, O_WRONLY | O_CREAT, 0o644)
        #expect(fd >= 0)
        _ = squash.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(builder.partitionOffset)) }
        close(fd)
        try builder.write(to: ours, partition: SIFPartitionInfo(arch: .amd64), partitionSize: Int64(squash.count))

        var a = try readFile(reference)
        var b = try readFile(ours)
        #expect(a.count == b.count)
        func mask(_ bytes: inout [UInt8]) {
            bytes.replaceSubrange(48..<80, with: [UInt8](repeating: 0, count: 32))  // ID, CreatedAt, ModifiedAt
            for slot in 0..<48 {
                let base = 4096 + slot * 585
                bytes.replaceSubrange((base + 41)..<(base + 57), with: [UInt8](repeating: 0, count: 16))
            }
        }
        mask(&a)
        mask(&b)
        let identical = a == b
        #expect(identical, "builder output differs from siftool's")
        if !identical, let first = zip(a, b).enumerated().first(where: { $0.element.0 != $0.element.1 }) {
            Issue.record("first difference at byte \(first.offset)")
        }
    }

    @Test(.enabled(if: haveSiftool))
    func noPrimaryPartitionFromSiftool() async throws {
        let dir = try TempDir()
        let path = dir.sub("def-only.sif")
        try writeFile(dir.sub("recipe.def"), definitionText)
        try await runChecked("siftool", ["new", path])
        try await runChecked("siftool", ["add", "--datatype", "1", path, dir.sub("recipe.def")])
        let sif = try SIFFile(path: path)
        #expect(sif.descriptors.count == 1)
        #expect(sif.primaryPartition == nil)
        #expect(sifError { () throws(SIFError) in _ = try sif.requirePrimaryPartition() } == .noPrimaryPartition(path: path))
    }
}
