import Archive
import Foundation
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A temporary directory removed on deinit, with `target` (extraction root) and `sibling`
/// (must stay empty: proves nothing escaped the root).
final class Sandbox {
    let base: String
    var target: String { base + "/target" }
    var sibling: String { base + "/sibling" }

    init() {
        var template = Array((NSTemporaryDirectory() + "/archive-test-XXXXXX").utf8CString)
        let p = mkdtemp(&template)!
        base = String(cString: p)
        mkdir(base + "/target", 0o755)
        mkdir(base + "/sibling", 0o755)
    }

    deinit { _ = try? FileManager.default.removeItem(atPath: base) }

    func siblingContents() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: sibling)) ?? ["<unreadable>"]
    }

    /// Writes `bytes` to a file in the sandbox base and applies it to `target`.
    @discardableResult
    func apply(
        _ bytes: [UInt8], compression: LayerCompression = .none, root: String? = nil,
        options: ApplyOptions = ApplyOptions()
    ) throws -> ApplyResult {
        let path = base + "/layer-\(UInt32.random(in: 0...UInt32.max))"
        try writeBytes(path, bytes)
        defer { unlink(path) }
        return try LayerApplier.apply(layerAt: path, compression: compression, to: root ?? target, options: options)
    }
}

func writeBytes(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func readBytes(_ path: String) -> [UInt8]? {
    FileManager.default.contents(atPath: path).map { [UInt8]($0) }
}

func lstatOf(_ path: String) -> stat? {
    var st = stat()
    return lstat(path, &st) == 0 ? st : nil
}

func exists(_ path: String) -> Bool { lstatOf(path) != nil }

func fileType(_ path: String) -> mode_t? { lstatOf(path).map { $0.st_mode & S_IFMT } }

func linkTarget(_ path: String) -> String? { try? FileManager.default.destinationOfSymbolicLink(atPath: path) }

func randomBytes(_ n: Int, seed: UInt64 = 42) -> [UInt8] {
    var state = seed &+ 0x9E37_79B9_7F4A_7C15
    var out = [UInt8](repeating: 0, count: n)
    for i in 0..<n {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        out[i] = UInt8(truncatingIfNeeded: state >> 33)
    }
    return out
}

/// Builds an in-memory tar.
func makeTar(format: TarWriter.LongNameFormat = .pax, _ build: (inout TarWriter) throws -> Void) rethrows -> [UInt8] {
    var w = TarWriter(longNameFormat: format)
    try build(&w)
    try! w.finish()
    return w.bytes
}

func file(_ name: String, _ content: String, mode: UInt32 = 0o644, mtime: Int64 = 1_700_000_000) -> (TarHeader, [UInt8]) {
    (TarHeader(name: name, type: .regular, mode: mode, mtime: TarTimestamp(seconds: mtime)), Array(content.utf8))
}

func dir(_ name: String, mode: UInt32 = 0o755) -> TarHeader {
    TarHeader(name: name, type: .directory, mode: mode, mtime: TarTimestamp(seconds: 1_600_000_000))
}

func symlink(_ name: String, to target: String) -> TarHeader {
    TarHeader(name: name, type: .symbolicLink, mode: 0o777, linkName: target)
}

func hardlink(_ name: String, to target: String) -> TarHeader {
    TarHeader(name: name, type: .hardLink, mode: 0o644, linkName: target)
}

extension TarWriter {
    mutating func add(_ entry: (TarHeader, [UInt8])) throws { try write(entry.0, contents: entry.1) }
}

func sha256sum(_ path: String) async throws -> String {
    let r = try await runChecked("sha256sum", [path])
    return "sha256:" + String(r.stdout.prefix(64))
}

/// Extracts the `ArchiveError.Kind` of an error for `#expect`.
func archiveKind(_ body: () throws -> Void) -> ArchiveError.Kind? {
    do {
        try body()
        return nil
    } catch let e as ArchiveError {
        return e.kind
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}
