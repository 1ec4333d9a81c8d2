import Foundation
import Testing
import TestSupport

@testable import SIF

#if canImport(Glibc)
import Glibc
#endif

@Suite("SIF descriptor table placement", .tags(.unit))
struct SIFTableOffsetTests {
    func maxResidentBytes() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024
    }

    /// The header may put the table anywhere below 2 GiB; opening such a (sparse) file reads the table, not the
    /// gap before it: it used to read everything up to the table's end into memory.
    @Test func aTableNearTwoGibibytesIsReadWithoutTheGapBeforeIt() throws {
        let dir = try TempDir()
        let path = try makeFakeImage(in: dir)
        let original = try SIFFile(path: path)
        var bytes = try readFile(path)
        let tableOffset = Int(original.header.descriptorsOffset)
        let table = Array(bytes[tableOffset..<(tableOffset + Int(original.header.descriptorsTotal) * SIFLayout.descriptorSize)])
        let far: Int64 = 1_900_000_000
        var field = [UInt8](repeating: 0, count: 8)
        writeLE(far, into: &field, at: 0)
        bytes.replaceSubrange(96..<104, with: field)
        let moved = dir.sub("far-table.sif")
        try writeFile(moved, bytes)
        let fd = open(moved, O_WRONLY)
        #expect(table.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(far)) } == table.count)
        close(fd)

        let before = maxResidentBytes()
        let reopened = try SIFFile(path: moved)
        #expect(maxResidentBytes() - before < 256 << 20)
        #expect(reopened.descriptors == original.descriptors)
        #expect(reopened.primaryPartition != nil)
    }
}
