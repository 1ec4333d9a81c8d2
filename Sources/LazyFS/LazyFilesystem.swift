import Foundation
import FUSE
import ImageTree
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// The image tree served through FUSE, read-only. Names and attributes never change while mounted, so the kernel
/// may cache them (and file pages) for long; only file contents may need the network.
final class LazyFilesystem: FUSEFilesystem {
    let image: LazyImage
    let recorder: AccessRecorder?
    let logger: Logger

    init(image: LazyImage, recorder: AccessRecorder?, logger: Logger) {
        self.image = image
        self.recorder = recorder
        self.logger = logger
    }

    /// The tree is immutable: let the kernel keep what it learns.
    static let cacheSeconds = 3600.0
    var attributeTimeout: Double { Self.cacheSeconds }
    var negativeEntryTimeout: Double { Self.cacheSeconds }

    private func node(_ ino: UInt64) throws -> ImageTree.Node {
        guard let node = image.tree.node(ino) else { throw FUSEError.notFound }
        return node
    }

    func attributes(_ node: ImageTree.Node) -> FUSEAttributes {
        let type: UInt32
        var permissions = node.permissions
        var rdev: UInt64 = 0
        switch node.kind {
        case .directory: type = UInt32(S_IFDIR)
        case .regular: type = UInt32(S_IFREG)
        case .symlink:
            // Linux ignores a symlink's mode and always reports 0777, as `unpack` shows; a tar header's mode
            // (often 0644 or 0755) is not what the kernel would give the extracted link.
            type = UInt32(S_IFLNK)
            permissions = 0o777
        case .hardlink: type = UInt32(S_IFREG)
        case .characterDevice(let major, let minor):
            type = UInt32(S_IFCHR)
            rdev = Self.makeDevice(major, minor)
        case .blockDevice(let major, let minor):
            type = UInt32(S_IFBLK)
            rdev = Self.makeDevice(major, minor)
        case .fifo: type = UInt32(S_IFIFO)
        }
        return FUSEAttributes(
            ino: node.ino, mode: type | permissions, nlink: node.nlink, uid: node.uid, gid: node.gid, size: UInt64(max(0, node.size)),
            rdev: rdev, mtimeSeconds: node.mtime)
    }

    static func makeDevice(_ major: UInt32, _ minor: UInt32) -> UInt64 {
        let major = UInt64(major), minor = UInt64(minor)
        return (major & 0xfff) << 8 | (major & ~0xfff) << 32 | (minor & 0xff) | (minor & ~0xff) << 12
    }

    func lookup(parent: UInt64, name: [UInt8]) throws -> FUSEEntry {
        guard let child = image.tree.lookup(parent: parent, name: String(decoding: name, as: UTF8.self)) else { throw FUSEError.notFound }
        return FUSEEntry(attributes: attributes(child), attributeTimeout: Self.cacheSeconds, entryTimeout: Self.cacheSeconds)
    }

    func getattr(_ ino: UInt64) throws -> FUSEAttributes {
        attributes(try node(ino))
    }

    func readlink(_ ino: UInt64) throws -> [UInt8] {
        guard case .symlink(let target) = try node(ino).kind else { throw FUSEError.invalidArgument }
        return Array(target.utf8)
    }

    func open(_ ino: UInt64, flags: Int32) throws -> UInt64 {
        guard flags & O_ACCMODE == O_RDONLY else { throw FUSEError.readOnlyFilesystem }
        let node = try node(ino)
        if node.isDirectory { throw FUSEError.isDirectory }
        recorder?.opened(image.tree.path(of: ino))
        return 0
    }

    /// A file whose content is on local disk as one file: a layer extracted whole in the store, or a file that is
    /// one chunk, cached and verified.
    func passthroughFile(_ ino: UInt64) -> Int32? {
        guard let node = try? node(ino), node.size > 0 else { return nil }
        switch node.content {
        case .local(let path):
            let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
            return fd >= 0 ? fd : nil
        case .estargz(let index, let name):
            guard let layer = image.layers[index], layer.rejection.withLock({ $0 == nil }), !layer.isIndexed,
                let chunk = layer.chunk(for: name, at: 0), chunk.chunkOffset == 0, chunk.chunkSize == node.size,
                let digest = try? ChunkFetcher.digest(chunk)
            else { return nil }
            return image.fetcher.cache.verifiedDescriptor(digest)
        case .bytes, nil:
            return nil
        }
    }

    func read(_ ino: UInt64, fh: UInt64, offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let node = try node(ino)
        do {
            let bytes = try image.read(node, offset: offset, size: buffer.count)
            bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
            return bytes.count
        } catch {
            logger.error("read of \(image.tree.path(of: ino)) at \(offset) failed: \(error)")
            throw FUSEError.io
        }
    }

    func readdir(_ ino: UInt64) throws -> [FUSEDirectoryEntry] {
        let dir = try node(ino)
        guard dir.isDirectory else { throw FUSEError.notDirectory }
        return dir.childNames.compactMap { name in
            guard let childIno = dir.children[name], let child = image.tree.node(childIno) else { return nil }
            return (Array(name.utf8), childIno, attributes(child).mode)
        }
    }

    func getxattr(_ ino: UInt64, name: [UInt8]) throws -> [UInt8] {
        guard let value = try node(ino).xattrs[String(decoding: name, as: UTF8.self)] else { throw FUSEError.noData }
        return value
    }

    func listxattr(_ ino: UInt64) throws -> [[UInt8]] {
        try node(ino).xattrs.keys.sorted().map { Array($0.utf8) }
    }

    func statfs() throws -> FUSEFilesystemStatistics {
        var statistics = FUSEFilesystemStatistics()
        statistics.blocks = image.tree.totalBytes / 4096 + 1
        statistics.files = UInt64(image.tree.nodes.count)
        return statistics
    }
}
