import CLinux
import EStargz
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Turns each form a layer can take into the entries `ImageTree` merges.
public enum LayerEntries {
    /// Entries of an eStargz layer from its TOC; the TOC, landmarks and chunk records are not files.
    public static func fromTOC(_ toc: TOC, layer: Int) -> [LayerEntry] {
        var entries: [LayerEntry] = []
        entries.reserveCapacity(toc.entries.count)
        for e in toc.entries {
            let path = cleanEntryName(e.name)
            if path == estargzTOCName || path == prefetchLandmarkName || path == noPrefetchLandmarkName { continue }
            let kind: LayerEntry.Kind
            switch e.type {
            case "dir": kind = .directory
            case "reg": kind = .regular(size: e.size)
            case "symlink": kind = .symlink(target: e.linkName)
            case "hardlink": kind = .hardlink(target: cleanEntryName(e.linkName))
            case "char": kind = .characterDevice(major: UInt32(clamping: e.devMajor), minor: UInt32(clamping: e.devMinor))
            case "block": kind = .blockDevice(major: UInt32(clamping: e.devMajor), minor: UInt32(clamping: e.devMinor))
            case "fifo": kind = .fifo
            default: continue  // "chunk" continues a file already listed
            }
            var content: FileContent?
            if case .regular = kind { content = .estargz(layer: layer, name: path) }
            entries.append(
                LayerEntry(
                    path: path, kind: kind, permissions: UInt32(truncatingIfNeeded: e.mode) & 0o7777, uid: UInt32(clamping: e.uid),
                    gid: UInt32(clamping: e.gid), mtime: parseModtime(e.modtime), xattrs: e.xattrs, content: content))
        }
        return entries
    }

    /// Entries of a layer extracted for overlayfs (`WhiteoutMode.overlay`): a 0/0 character device is a whiteout
    /// and `trusted.overlay.opaque=y` marks an opaque directory; both become the OCI markers again.
    public static func fromDirectory(_ root: String) throws -> [LayerEntry] {
        var entries: [LayerEntry] = []
        var inodes: [UInt64: String] = [:]  // first path of each multiply-linked file
        func walk(_ relative: String) throws {
            let path = relative.isEmpty ? root : "\(root)/\(relative)"
            var info = stat()
            guard lstat(path, &info) == 0 else { throw LayerDirectoryError(path: path, errno: errno) }
            let type = info.st_mode & S_IFMT
            let xattrs = readXattrs(path)
            var kind: LayerEntry.Kind
            switch type {
            case S_IFDIR: kind = .directory
            case S_IFREG: kind = .regular(size: Int64(info.st_size))
            case S_IFLNK: kind = .symlink(target: readLink(path))
            case S_IFCHR:
                if info.st_rdev == 0 && !relative.isEmpty {
                    entries.append(LayerEntry(path: whiteoutPath(relative), kind: .regular(size: 0), permissions: 0))
                    return
                }
                kind = .characterDevice(major: major(info.st_rdev), minor: minor(info.st_rdev))
            case S_IFBLK: kind = .blockDevice(major: major(info.st_rdev), minor: minor(info.st_rdev))
            case S_IFIFO: kind = .fifo
            default: return
            }
            if type == S_IFREG, info.st_nlink > 1 {
                if let first = inodes[UInt64(info.st_ino)] {
                    kind = .hardlink(target: first)
                } else {
                    inodes[UInt64(info.st_ino)] = relative
                }
            }
            var clean = xattrs
            let opaque = clean.removeValue(forKey: ImageTree.overlayOpaqueXattr) == Array("y".utf8)
            entries.append(
                LayerEntry(
                    path: relative, kind: kind, permissions: UInt32(info.st_mode) & 0o7777, uid: info.st_uid, gid: info.st_gid,
                    mtime: Int64(info.st_mtim.tv_sec), xattrs: clean, content: type == S_IFREG ? .local(path: path) : nil))
            if opaque { entries.append(LayerEntry(path: relative + "/" + ImageTree.opaqueMarker, kind: .regular(size: 0), permissions: 0)) }
            if type == S_IFDIR {
                for name in try FileManager.default.contentsOfDirectory(atPath: path).sorted() {
                    try walk(relative.isEmpty ? name : "\(relative)/\(name)")
                }
            }
        }
        try walk("")
        return entries
    }

    private static func whiteoutPath(_ relative: String) -> String {
        guard let slash = relative.lastIndex(of: "/") else { return ImageTree.whiteoutPrefix + relative }
        return relative[...slash] + ImageTree.whiteoutPrefix + relative[relative.index(after: slash)...]
    }

    private static func readLink(_ path: String) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n >= 0 else { return "" }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func readXattrs(_ path: String) -> [String: [UInt8]] {
        let size = llistxattr(path, nil, 0)
        guard size > 0 else { return [:] }
        var names = [CChar](repeating: 0, count: size)
        let got = llistxattr(path, &names, size)
        guard got > 0 else { return [:] }
        var result: [String: [UInt8]] = [:]
        for raw in names[..<got].split(separator: 0) {
            let name = String(decoding: raw.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let length = lgetxattr(path, name, nil, 0)
            guard length >= 0 else { continue }
            var value = [UInt8](repeating: 0, count: length)
            if length > 0 { guard lgetxattr(path, name, &value, length) == length else { continue } }
            result[name] = value
        }
        return result
    }

    private static func major(_ dev: dev_t) -> UInt32 { UInt32((dev >> 8) & 0xfff) | UInt32((dev >> 32) & 0xffff_f000) }
    private static func minor(_ dev: dev_t) -> UInt32 { UInt32(dev & 0xff) | UInt32((dev >> 12) & 0xfff_ff00) }
}
