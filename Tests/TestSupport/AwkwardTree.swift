import CLinux
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A tree with what trips squashfs writers up: 255-byte names, 10,000 files in one directory (a listing of many
/// metadata blocks, so lookups go through the directory index), hard links across directories, sparse and empty
/// files, files of exactly one and two blocks, devices, a FIFO, long symlinks, extended attributes on files,
/// directories and links, setuid and sticky modes, owners beyond 16 bits and timestamps past 2038.
public func makeAwkwardTree(_ root: String) throws {
    let files = FileManager.default
    for directory in ["a/b/c", "many", "links/one", "links/two", "dev", "empty-dir"] {
        try files.createDirectory(atPath: "\(root)/\(directory)", withIntermediateDirectories: true)
    }
    var random = SystemRandomNumberGenerator()
    func bytes(_ count: Int, compressible: Bool) -> Data {
        compressible
            ? Data((0..<count).map { UInt8(truncatingIfNeeded: $0 / 7 &* 31) })
            : Data((0..<count).map { _ in UInt8.random(in: 0...255, using: &random) })
    }
    try bytes(131_072, compressible: true).write(to: URL(fileURLWithPath: "\(root)/a/one-block"))
    try bytes(262_144, compressible: false).write(to: URL(fileURLWithPath: "\(root)/a/two-blocks-random"))
    try bytes(3 << 20 | 12345, compressible: true).write(to: URL(fileURLWithPath: "\(root)/a/b/large"))
    try Data().write(to: URL(fileURLWithPath: "\(root)/a/empty"))
    try Data("same bytes\n".utf8).write(to: URL(fileURLWithPath: "\(root)/a/b/c/duplicate-1"))
    try Data("same bytes\n".utf8).write(to: URL(fileURLWithPath: "\(root)/a/duplicate-2"))
    // Sparse: a hole, 4 KiB of data in the second block, a hole to 1 MiB.
    let sparse = open("\(root)/a/sparse", O_WRONLY | O_CREAT, 0o644)
    _ = [UInt8](repeating: 0x5A, count: 4096).withUnsafeBytes { pwrite(sparse, $0.baseAddress, 4096, 200_000) }
    ftruncate(sparse, 1 << 20)
    close(sparse)
    try Data("linked\n".utf8).write(to: URL(fileURLWithPath: "\(root)/links/one/file"))
    link("\(root)/links/one/file", "\(root)/links/two/same-file")
    link("\(root)/links/one/file", "\(root)/links/third-name")
    setxattr("\(root)/links/one/file", "user.origin", "layer", 5, 0)
    let longName = String(repeating: "n", count: 250) + ".text"
    try Data("long name\n".utf8).write(to: URL(fileURLWithPath: "\(root)/a/\(longName)"))
    for index in 0..<10_000 {
        try Data("file \(index)\n".utf8).write(to: URL(fileURLWithPath: "\(root)/many/entry-\(String(format: "%05d", index))-\(longName.prefix(20))"))
    }
    try files.createSymbolicLink(atPath: "\(root)/a/relative-link", withDestinationPath: "b/large")
    try files.createSymbolicLink(atPath: "\(root)/a/long-link", withDestinationPath: String(repeating: "x/", count: 600) + "end")
    try files.createSymbolicLink(atPath: "\(root)/a/dangling", withDestinationPath: "/nowhere")
    lsetxattr("\(root)/a/dangling", "trusted.link-note", "kept", 4, 0)
    mknod("\(root)/dev/null-like", S_IFCHR | 0o666, deviceNumber(1, 3))
    mknod("\(root)/dev/big-minor", S_IFCHR | 0o600, deviceNumber(250, 70000))
    mknod("\(root)/dev/loop-like", S_IFBLK | 0o660, deviceNumber(7, 0))
    mkfifo("\(root)/dev/pipe", 0o640)
    setxattr("\(root)/a/b", "user.directory", "yes", 3, 0)
    setxattr("\(root)/a/b/large", "security.capability-like", "\u{1}\u{2}", 2, 0)
    setxattr("\(root)/a/b/large", "user.empty", "", 0, 0)
    chmod("\(root)/a/one-block", 0o4755)
    chmod("\(root)/empty-dir", 0o1777)
    chown("\(root)/a/two-blocks-random", 1000, 1000)
    chown("\(root)/a/b/c", 4_000_000, 65534)
    lchown("\(root)/a/relative-link", 1234, 5678)
    // Times last: every change above moves its directory's.
    var index = 0
    for path in (files.enumerator(atPath: root)?.allObjects as? [String] ?? []).sorted().reversed() {
        index += 1
        let seconds = index % 3 == 0 ? 4_102_444_800 + index : 1_600_000_000 + index * 37
        var times = [timespec(tv_sec: seconds, tv_nsec: 0), timespec(tv_sec: seconds, tv_nsec: 0)]
        utimensat(AT_FDCWD, "\(root)/\(path)", &times, AT_SYMLINK_NOFOLLOW)
    }
}

/// glibc's makedev, which Swift does not import.
public func deviceNumber(_ major: UInt64, _ minor: UInt64) -> dev_t {
    dev_t((minor & 0xFF) | (major & 0xFFF) << 8 | (minor & ~0xFF) << 12 | (major & ~0xFFF) << 32)
}
