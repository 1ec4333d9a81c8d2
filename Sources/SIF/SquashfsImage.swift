#if canImport(Glibc)
import Glibc
#endif
import Archive
import Blocking
import Foundation
import ImageTree

/// Builds a squashfs of an image's merged root filesystem without materialising it: the tree LazyFS builds from
/// the per-layer extraction cache (whiteouts and opaque directories applied, hard links kept) is written as one
/// tar stream into `mksquashfs -tar`, which compresses on every core. The squashfs can be written at an offset
/// inside a larger file (a SIF's partition).
public enum SquashfsImage {
    public struct Options: Sendable {
        /// mksquashfs compressor; Apptainer builds with gzip.
        public var compressor = "gzip"
        public var processors = ProcessInfo.processInfo.activeProcessorCount
        /// Files added beside the image's own (Apptainer's `/.singularity.d`), path → (mode, contents).
        public var extraFiles: [String: (mode: UInt32, contents: [UInt8])] = [:]
        public init() {}
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// Writes the squashfs into `path` from byte `offset` on (the bytes before it are left alone) and returns its
    /// size.
    public static func write(_ tree: ImageTree, to path: String, offset: Int64, options: Options = Options()) async throws -> Int64 {
        let mksquashfs = "/usr/bin/mksquashfs"
        guard FileManager.default.isExecutableFile(atPath: mksquashfs) else {
            throw Failure(description: "mksquashfs not found: install Debian's squashfs-tools")
        }
        // The tar stream is written on the command's own waiting thread: pipe writes block while mksquashfs
        // compresses.
        let command = ChildCommand(
            mksquashfs,
            [
                "-", path, "-tar", "-noappend", "-offset", String(offset), "-comp", options.compressor,
                "-processors", String(max(1, options.processors)), "-root-mode", "755", "-quiet", "-no-progress",
            ],
            standardInput: .stream { [extraFiles = options.extraFiles] descriptor in
                try streamTar(tree, extraFiles: extraFiles, into: descriptor)
            })
        let result = try await command.run()
        guard result.status == 0 else {
            let lastLines = result.standardErrorText.split(separator: "\n").suffix(5).joined(separator: "; ")
            throw Failure(description: "mksquashfs failed (status \(result.status)): \(lastLines)")
        }
        if let failure = result.inputFailure { throw failure }
        var info = stat()
        guard stat(path, &info) == 0 else { throw Failure(description: "\(path): \(String(cString: strerror(errno)))") }
        return Int64(info.st_size) - offset
    }

    /// The tree as tar, parents before children. Files with several names are stored once and linked.
    static func streamTar(_ tree: ImageTree, extraFiles: [String: (mode: UInt32, contents: [UInt8])], into fd: Int32) throws {
        var writer = TarWriter(longNameFormat: .pax) { chunk in try writeAll(fd, chunk) }
        var firstName: [UInt64: String] = [:]
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var pending = [(ImageTree.rootIno, "")]
        let extras = Set(extraFiles.keys)
        while let (ino, path) = pending.popLast() {
            guard let node = tree.node(ino) else { continue }
            if !path.isEmpty {
                // The image's own copy of a file we generate would be a duplicate entry.
                if extras.contains(path) { continue }
                var header = TarHeader(
                    name: path, type: .regular, mode: node.permissions, uid: Int(node.uid), gid: Int(node.gid),
                    mtime: TarTimestamp(seconds: node.mtime), xattrs: node.xattrs.filter { !$0.key.hasPrefix("trusted.overlay.") })
                switch node.kind {
                case .directory: header.type = .directory
                case .symlink(let target):
                    header.type = .symbolicLink
                    header.linkName = target
                case .characterDevice(let major, let minor):
                    header.type = .characterDevice
                    (header.devMajor, header.devMinor) = (major, minor)
                case .blockDevice(let major, let minor):
                    header.type = .blockDevice
                    (header.devMajor, header.devMinor) = (major, minor)
                case .fifo: header.type = .fifo
                case .hardlink, .regular:
                    if node.nlink > 1, let first = firstName[ino] {
                        header.type = .hardLink
                        header.linkName = first
                    } else {
                        firstName[ino] = path
                        header.size = node.size
                    }
                }
                try writer.writeHeader(header)
                if header.type == .regular, header.size > 0 {
                    guard case .local(let source) = node.content else {
                        throw Failure(description: "/\(path) is not in the layer cache (lazy layers cannot be squashed)")
                    }
                    try copyContents(of: source, size: header.size, into: &writer, buffer: &buffer)
                }
            }
            if node.isDirectory {
                // Reversed so that popping visits children in name order.
                for name in node.childNames.reversed() {
                    if let child = node.children[name] { pending.append((child, path.isEmpty ? name : "\(path)/\(name)")) }
                }
            }
        }
        for (path, file) in extraFiles.sorted(by: { $0.key < $1.key }) {
            var parents: [String] = []
            var parent = (path as NSString).deletingLastPathComponent
            while !parent.isEmpty, tree.node(at: parent) == nil {
                parents.append(parent)
                parent = (parent as NSString).deletingLastPathComponent
            }
            for directory in parents.reversed() { try writer.writeHeader(TarHeader(name: directory, type: .directory, mode: 0o755)) }
            try writer.write(TarHeader(name: path, type: .regular, mode: file.mode), contents: file.contents)
        }
        try writer.finish()
    }

    private static func copyContents(of source: String, size: Int64, into writer: inout TarWriter, buffer: inout [UInt8]) throws {
        let fd = open(source, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure(description: "\(source): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var remaining = size
        while remaining > 0 {
            let wanted = Int(min(Int64(buffer.count), remaining))
            let got = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, wanted) }
            if got < 0, errno == EINTR { continue }
            guard got > 0 else { throw Failure(description: "\(source) is shorter than the \(size) bytes the layer recorded") }
            try buffer.withUnsafeBytes { try writer.writeContents(UnsafeRawBufferPointer(rebasing: $0[0..<got])) }
            remaining -= Int64(got)
        }
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, bytes.count - offset) }
            if written < 0 {
                if errno == EINTR { continue }
                throw Failure(description: "writing to mksquashfs: \(String(cString: strerror(errno)))")
            }
            offset += written
        }
    }
}
