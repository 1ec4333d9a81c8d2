import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What a tree occupies on disk, as `du` counts it: allocated blocks, every inode once however many hard links
/// reach it, symbolic links not followed.
enum DirectoryUsage {
    static func measure(_ root: String) throws -> SnapshotUsage {
        var usage = SnapshotUsage(bytes: 0, inodes: 0)
        var seen = Set<[UInt64]>()
        func count(_ path: String) {
            var info = stat()
            guard lstat(path, &info) == 0 else { return }
            guard seen.insert([UInt64(info.st_dev), UInt64(info.st_ino)]).inserted else { return }
            usage.inodes += 1
            usage.bytes += Int64(info.st_blocks) * 512
        }
        count(root)
        guard let enumerator = FileManager.default.enumerator(atPath: root) else {
            throw SnapshotError.notFound("tree \(root)")
        }
        for case let relative as String in enumerator {
            count("\(root)/\(relative)")
        }
        return usage
    }
}
