import Foundation
import Testing

@testable import SIF

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

func toolExists(_ name: String) -> Bool {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    return path.split(separator: ":").contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(name)") }
}

let haveSquashTools = toolExists("mksquashfs") && toolExists("unsquashfs")
let haveSiftool = toolExists("siftool")

/// A temporary directory removed when the test is done.
final class TempDir {
    let path: String
    init() throws {
        var template = Array((NSTemporaryDirectory() + "/sif-test-XXXXXX").utf8CString)
        guard let p = mkdtemp(&template) else { throw SIFError.io(path: "mkdtemp", operation: "mkdtemp", errno: errno) }
        path = String(cString: p)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func sub(_ name: String) -> String { path + "/" + name }
}

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func writeFile(_ path: String, _ text: String) throws {
    try writeFile(path, Array(text.utf8))
}

func readFile(_ path: String) throws -> [UInt8] {
    Array(try Data(contentsOf: URL(fileURLWithPath: path)))
}

func fileSize(_ path: String) throws -> Int64 {
    (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value ?? -1
}

func truncateFile(_ path: String, to size: Int64) throws {
    guard truncate(path, off_t(size)) == 0 else { throw SIFError.io(path: path, operation: "truncate", errno: errno) }
}

/// Overwrites bytes at `offset` of an existing file.
func patchFile(_ path: String, at offset: Int, with bytes: [UInt8]) throws {
    var all = try readFile(path)
    all.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
    try writeFile(path, all)
}

/// A small directory tree to squash.
func makeTree(in dir: String) throws {
    let fm = FileManager.default
    try fm.createDirectory(atPath: dir + "/etc", withIntermediateDirectories: true)
    try fm.createDirectory(atPath: dir + "/usr/bin", withIntermediateDirectories: true)
    try writeFile(dir + "/etc/hostname", "slipway\n")
    try writeFile(dir + "/usr/bin/hello", "#!/bin/sh\necho hello\n")
    try writeFile(dir + "/README", String(repeating: "squash me ", count: 2000))
}

/// Catches the typed error of `body`; fails the test if nothing is thrown.
func sifError(_ body: () throws(SIFError) -> Void) -> SIFError? {
    do {
        try body()
        Issue.record("expected a SIFError, nothing was thrown")
        return nil
    } catch {
        return error
    }
}

/// The "start-end" position `siftool list` prints for object `id`.
func siftoolPosition(_ listOutput: String, id: UInt32) -> (start: Int64, end: Int64, line: String)? {
    for line in listOutput.split(separator: "\n") {
        let cols = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
        guard cols.count >= 5, cols[0] == String(id) else { continue }
        let pos = cols[3].split(separator: "-")
        guard pos.count == 2, let s = Int64(pos[0]), let e = Int64(pos[1]) else { return nil }
        return (s, e, String(line))
    }
    return nil
}

/// The value of "Key: value" in siftool header/info output.
func siftoolField(_ output: String, _ key: String) -> String? {
    for line in output.split(separator: "\n") {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix(key + ":") else { continue }
        return trimmed.dropFirst(key.count + 1).trimmingCharacters(in: .whitespaces)
    }
    return nil
}
