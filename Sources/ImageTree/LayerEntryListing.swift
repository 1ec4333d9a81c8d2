import Crypto

/// A layer directory's entries (`LayerEntries.fromDirectory`) as bytes, so a directory that never changes (the
/// store's layer cache, named by diffID) is walked once: reading 12,000 entries back costs a file read instead of
/// 24,000 `lstat` and `llistxattr` calls. File paths are kept relative to the directory. A sha256 trailer makes a
/// damaged listing fail to decode rather than describe another tree.
public enum LayerEntryListing {
    private static let magic = Array("SLPWLEL1".utf8)
    private static let maxEntries = 1 << 24

    public static func encode(_ entries: [LayerEntry], root: String) -> [UInt8] {
        var out = magic
        out.appendLE(UInt64(entries.count))
        for entry in entries {
            out.appendString(entry.path)
            switch entry.kind {
            case .directory: out.append(0)
            case .regular(let size):
                out.append(1)
                out.appendLE(UInt64(bitPattern: size))
            case .symlink(let target):
                out.append(2)
                out.appendString(target)
            case .hardlink(let target):
                out.append(3)
                out.appendString(target)
            case .characterDevice(let major, let minor):
                out.append(4)
                out.appendLE(major)
                out.appendLE(minor)
            case .blockDevice(let major, let minor):
                out.append(5)
                out.appendLE(major)
                out.appendLE(minor)
            case .fifo: out.append(6)
            }
            out.appendLE(entry.permissions)
            out.appendLE(entry.uid)
            out.appendLE(entry.gid)
            out.appendLE(UInt64(bitPattern: entry.mtime))
            out.appendLE(UInt32(entry.xattrs.count))
            for (name, value) in entry.xattrs.sorted(by: { $0.key < $1.key }) {
                out.appendString(name)
                out.appendLE(UInt32(value.count))
                out += value
            }
            if case .local(let path) = entry.content, path.hasPrefix(root + "/") || path == root {
                out.append(1)
                out.appendString(String(path.dropFirst(root.count)))
            } else {
                out.append(0)
            }
        }
        out += SHA256.hash(data: out)
        return out
    }

    /// The entries `encode` wrote, with file paths under `root`; nil for anything else.
    public static func decode(_ bytes: [UInt8], root: String) -> [LayerEntry]? {
        guard bytes.count >= magic.count + 8 + 32, Array(bytes[..<magic.count]) == magic else { return nil }
        let body = Array(bytes[..<(bytes.count - 32)])
        guard Array(SHA256.hash(data: body)) == Array(bytes[(bytes.count - 32)...]) else { return nil }
        var reader = LittleEndianReader(bytes: body, position: magic.count)
        guard let count = reader.u64(), count <= maxEntries else { return nil }
        var entries: [LayerEntry] = []
        entries.reserveCapacity(Int(count))
        for _ in 0..<count {
            guard let path = reader.string(), let tag = reader.u8() else { return nil }
            let kind: LayerEntry.Kind
            switch tag {
            case 0: kind = .directory
            case 1:
                guard let size = reader.u64() else { return nil }
                kind = .regular(size: Int64(bitPattern: size))
            case 2:
                guard let target = reader.string() else { return nil }
                kind = .symlink(target: target)
            case 3:
                guard let target = reader.string() else { return nil }
                kind = .hardlink(target: target)
            case 4, 5:
                guard let major = reader.u32(), let minor = reader.u32() else { return nil }
                kind = tag == 4 ? .characterDevice(major: major, minor: minor) : .blockDevice(major: major, minor: minor)
            case 6: kind = .fifo
            default: return nil
            }
            guard let permissions = reader.u32(), let uid = reader.u32(), let gid = reader.u32(), let mtime = reader.u64(),
                let xattrCount = reader.u32(), xattrCount <= 1 << 16
            else { return nil }
            var xattrs: [String: [UInt8]] = [:]
            for _ in 0..<xattrCount {
                guard let name = reader.string(), let length = reader.u32(), let value = reader.bytes(Int(length)) else { return nil }
                xattrs[name] = value
            }
            guard let hasContent = reader.u8() else { return nil }
            var content: FileContent?
            if hasContent == 1 {
                guard let relative = reader.string() else { return nil }
                content = .local(path: root + relative)
            }
            entries.append(
                LayerEntry(
                    path: path, kind: kind, permissions: permissions, uid: uid, gid: gid, mtime: Int64(bitPattern: mtime), xattrs: xattrs,
                    content: content))
        }
        return reader.position == body.count ? entries : nil
    }
}
