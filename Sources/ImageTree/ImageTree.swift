import Foundation

/// One entry of a layer as the merged tree needs it, whatever the layer's form (eStargz TOC or extracted files).
public struct LayerEntry: Sendable {
    public enum Kind: Sendable, Equatable {
        case directory
        case regular(size: Int64)
        case symlink(target: String)
        /// A second name for `target` (a path in the image) — shares its inode.
        case hardlink(target: String)
        case characterDevice(major: UInt32, minor: UInt32)
        case blockDevice(major: UInt32, minor: UInt32)
        case fifo
    }

    /// Normalised path: no leading `/`, no `.` or `..` components; "" is the root.
    public var path: String
    public var kind: Kind
    /// Permission bits, with setuid/setgid/sticky.
    public var permissions: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var mtime: Int64
    public var xattrs: [String: [UInt8]]
    /// Where a regular file's bytes are.
    public var content: FileContent?

    public init(
        path: String, kind: Kind, permissions: UInt32, uid: UInt32 = 0, gid: UInt32 = 0, mtime: Int64 = 0,
        xattrs: [String: [UInt8]] = [:], content: FileContent? = nil
    ) {
        self.path = path
        self.kind = kind
        self.permissions = permissions
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.xattrs = xattrs
        self.content = content
    }
}

/// How to read a regular file's bytes.
public enum FileContent: Sendable, Equatable {
    /// Chunks of the file named `name` in the eStargz layer at `layer` (hard links are resolved by the reader).
    case estargz(layer: Int, name: String)
    /// A local file (a layer already extracted on this machine).
    case local(path: String)
    /// Bytes made here rather than taken from a layer (a SIF's `/.singularity.d` scripts).
    case bytes([UInt8])
}

/// The merged root filesystem of an image: the layers' entries applied bottom to top with OCI whiteouts
/// (`.wh.NAME` removes NAME from lower layers; `.wh..wh..opq` hides a directory's lower contents). Immutable once
/// built, so FUSE threads read it without locks. Inode 1 is the root, as FUSE expects.
public final class ImageTree: Sendable {
    public struct Node: Sendable {
        public var ino: UInt64
        public var kind: LayerEntry.Kind
        public var permissions: UInt32
        public var uid: UInt32
        public var gid: UInt32
        public var mtime: Int64
        public var xattrs: [String: [UInt8]]
        public var content: FileContent?
        public var nlink: UInt32
        /// Directory children in the order they first appeared.
        public var childNames: [String]
        public var children: [String: UInt64]
        /// Where the node was first linked (a hard-linked file has other names too).
        public var parent: UInt64 = 0
        public var name = ""

        public var size: Int64 {
            switch kind {
            case .regular(let size): size
            case .symlink(let target): Int64(target.utf8.count)
            case .directory: 4096
            default: 0
            }
        }

        public var isDirectory: Bool { kind == .directory }
    }

    public static let rootIno: UInt64 = 1
    public let nodes: [Node]
    /// Number of regular files (hard links counted once).
    public let fileCount: Int
    /// The nodes' sizes added up (hard links counted once), saturating at `UInt64.max`: sizes come from layer
    /// metadata, and statfs must answer whatever they add up to.
    public let totalBytes: UInt64

    public func node(_ ino: UInt64) -> Node? {
        ino >= 1 && ino <= UInt64(nodes.count) ? nodes[Int(ino - 1)] : nil
    }

    public func lookup(parent: UInt64, name: String) -> Node? {
        guard let dir = node(parent), let child = dir.children[name] else { return nil }
        return node(child)
    }

    /// The node at a normalised path ("" is the root).
    public func node(at path: String) -> Node? {
        var current = ImageTree.rootIno
        for part in path.split(separator: "/") {
            guard let next = lookup(parent: current, name: String(part)) else { return nil }
            current = next.ino
        }
        return node(current)
    }

    /// The node's path in the image (its first name for a hard link); "" for the root.
    public func path(of ino: UInt64) -> String {
        var parts: [String] = []
        var current = ino
        while current != ImageTree.rootIno, let node = node(current), node.parent != 0, parts.count < 4096 {
            parts.append(node.name)
            current = node.parent
        }
        return parts.reversed().joined(separator: "/")
    }

    /// Merges `layers` (bottom first).
    public init(layers: [[LayerEntry]]) {
        var builder = Builder()
        for entries in layers { builder.apply(entries) }
        nodes = builder.finish()
        fileCount = nodes.filter { if case .regular = $0.kind { true } else { false } }.count
        totalBytes = nodes.reduce(UInt64(0)) { sum, node in
            let (total, overflow) = sum.addingReportingOverflow(UInt64(clamping: node.size))
            return overflow ? .max : total
        }
    }

    /// One layer as overlayfs reads a lower directory, for a snapshotter that stacks layers with the kernel's
    /// overlay: a whiteout `.wh.NAME` becomes NAME as a 0/0 character device, and a directory with `.wh..wh..opq`
    /// gets `trusted.overlay.opaque=y` (what `WhiteoutMode.overlay` extraction writes to disk). Overlay xattrs the
    /// layer itself carries are dropped: they would steer the kernel's overlay (redirects, metacopy) from an
    /// image.
    public convenience init(overlayLower entries: [LayerEntry]) {
        var opaque: Set<String> = []
        var own: Set<String> = []
        for entry in entries {
            let (parent, base) = Self.split(entry.path)
            if base == Self.opaqueMarker { opaque.insert(parent) } else if !base.hasPrefix(Self.whiteoutPrefix) { own.insert(entry.path) }
        }
        var rendered: [LayerEntry] = []
        rendered.reserveCapacity(entries.count)
        var opaqueSeen: Set<String> = []
        for var entry in entries {
            let (parent, base) = Self.split(entry.path)
            if base == Self.opaqueMarker { continue }
            entry.xattrs = entry.xattrs.filter { !Self.isOverlayXattr($0.key) }
            if base.hasPrefix(Self.whiteoutPrefix) {
                let hidden = String(base.dropFirst(Self.whiteoutPrefix.count))
                let path = parent.isEmpty ? hidden : "\(parent)/\(hidden)"
                // A whiteout hides lower layers only: a name the layer has itself does that already.
                guard !hidden.isEmpty, hidden != ".", hidden != "..", !own.contains(path) else { continue }
                entry = LayerEntry(path: path, kind: .characterDevice(major: 0, minor: 0), permissions: 0, mtime: entry.mtime)
            } else if entry.kind == .directory, opaque.contains(entry.path) {
                entry.xattrs[Self.overlayOpaqueXattr] = Array("y".utf8)
                opaqueSeen.insert(entry.path)
            }
            rendered.append(entry)
        }
        // An opaque directory the layer does not list itself is created with default metadata, as extraction would.
        for path in opaque.subtracting(opaqueSeen).sorted() {
            rendered.append(LayerEntry(path: path, kind: .directory, permissions: 0o755, xattrs: [Self.overlayOpaqueXattr: Array("y".utf8)]))
        }
        self.init(layers: [rendered])
    }

    public static let overlayOpaqueXattr = "trusted.overlay.opaque"

    static func isOverlayXattr(_ name: String) -> Bool { name.hasPrefix("trusted.overlay.") || name.hasPrefix("user.overlay.") }

    static func split(_ path: String) -> (parent: String, base: String) {
        guard let slash = path.lastIndex(of: "/") else { return ("", path) }
        return (String(path[..<slash]), String(path[path.index(after: slash)...]))
    }

    static let whiteoutPrefix = ".wh."
    static let opaqueMarker = ".wh..wh..opq"

    private struct Builder {
        var nodes: [Node] = [
            Node(ino: 1, kind: .directory, permissions: 0o755, uid: 0, gid: 0, mtime: 0, xattrs: [:], content: nil, nlink: 2, childNames: [],
                 children: [:])
        ]

        mutating func apply(_ entries: [LayerEntry]) {
            // Whiteouts hide lower layers only, so they go first, before this layer's own entries.
            for entry in entries {
                let (parent, base) = split(entry.path)
                if base == ImageTree.opaqueMarker {
                    if let dir = find(parent), nodes[index(dir)].isDirectory {
                        nodes[index(dir)].children = [:]
                        nodes[index(dir)].childNames = []
                    }
                } else if base.hasPrefix(ImageTree.whiteoutPrefix), let dir = find(parent) {
                    let hidden = String(base.dropFirst(ImageTree.whiteoutPrefix.count))
                    nodes[index(dir)].children[hidden] = nil
                    nodes[index(dir)].childNames.removeAll { $0 == hidden }
                }
            }
            for entry in entries {
                let (parent, base) = split(entry.path)
                if base.hasPrefix(ImageTree.whiteoutPrefix) { continue }
                if entry.path.isEmpty {
                    update(ImageTree.rootIno, from: entry)
                    continue
                }
                let dir = ensureDirectory(parent)
                if case .hardlink(let target) = entry.kind {
                    guard let targetIno = find(target), !nodes[index(targetIno)].isDirectory else { continue }
                    link(base, in: dir, to: targetIno)
                    nodes[index(targetIno)].nlink += 1
                    continue
                }
                if let existing = nodes[index(dir)].children[base], nodes[index(existing)].isDirectory, entry.kind == .directory {
                    update(existing, from: entry)  // a directory again: new metadata, children kept
                    continue
                }
                let ino = UInt64(nodes.count + 1)
                nodes.append(
                    Node(ino: ino, kind: entry.kind, permissions: entry.permissions, uid: entry.uid, gid: entry.gid, mtime: entry.mtime,
                         xattrs: entry.xattrs, content: entry.content, nlink: 1, childNames: [], children: [:]))
                link(base, in: dir, to: ino)
            }
        }

        func index(_ ino: UInt64) -> Int { Int(ino - 1) }

        func split(_ path: String) -> (parent: String, base: String) { ImageTree.split(path) }

        func find(_ path: String) -> UInt64? {
            var current = ImageTree.rootIno
            for part in path.split(separator: "/") {
                guard let next = nodes[index(current)].children[String(part)] else { return nil }
                current = next
            }
            return current
        }

        mutating func link(_ name: String, in dir: UInt64, to ino: UInt64) {
            if nodes[index(dir)].children.updateValue(ino, forKey: name) == nil {
                nodes[index(dir)].childNames.append(name)
            }
            if nodes[index(ino)].parent == 0 {
                nodes[index(ino)].parent = dir
                nodes[index(ino)].name = name
            }
        }

        mutating func update(_ ino: UInt64, from entry: LayerEntry) {
            nodes[index(ino)].permissions = entry.permissions
            nodes[index(ino)].uid = entry.uid
            nodes[index(ino)].gid = entry.gid
            nodes[index(ino)].mtime = entry.mtime
            nodes[index(ino)].xattrs = entry.xattrs
        }

        /// The directory at `path`, created (0755, root) with its parents where the layer omits them; a
        /// non-directory in the way is replaced, as extraction would.
        mutating func ensureDirectory(_ path: String) -> UInt64 {
            var current = ImageTree.rootIno
            for part in path.split(separator: "/") {
                let name = String(part)
                if let next = nodes[index(current)].children[name], nodes[index(next)].isDirectory {
                    current = next
                    continue
                }
                let ino = UInt64(nodes.count + 1)
                nodes.append(
                    Node(ino: ino, kind: .directory, permissions: 0o755, uid: 0, gid: 0, mtime: 0, xattrs: [:], content: nil, nlink: 2,
                         childNames: [], children: [:]))
                link(name, in: current, to: ino)
                current = ino
            }
            return current
        }

        /// Directory link counts (2 + subdirectories), and children lists without names removed later.
        mutating func finish() -> [Node] {
            for i in nodes.indices where nodes[i].isDirectory {
                let children = nodes[i].children
                nodes[i].childNames = nodes[i].childNames.filter { children[$0] != nil }
                let subdirectories = children.values.filter { nodes[index($0)].isDirectory }.count
                nodes[i].nlink = UInt32(2 + subdirectories)
            }
            return nodes
        }
    }
}
