#if canImport(Glibc)
import Glibc
#endif

/// Crash-safe file writes: a temporary file in the same directory, fsync, rename, fsync of the directory.
/// Readers see the old content or the new, never a mix, also after power loss.
package enum AtomicFile {
    package static func write(_ bytes: [UInt8], to path: String, mode: mode_t = 0o644) throws {
        let directory = parent(of: path)
        let temporary = "\(directory)/.tmp-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw StoreError.io(path: temporary, operation: "create", errno: errno) }
        do {
            defer { close(fd) }
            try writeAll(fd, bytes, path: temporary)
            guard fsync(fd) == 0 else { throw StoreError.io(path: temporary, operation: "fsync", errno: errno) }
        } catch {
            unlink(temporary)
            throw error
        }
        do {
            try rename(temporary, to: path)
        } catch {
            unlink(temporary)
            throw error
        }
    }

    static func rename(_ source: String, to destination: String) throws {
        guard Glibc.rename(source, destination) == 0 else { throw StoreError.io(path: destination, operation: "rename", errno: errno) }
        syncDirectory(parent(of: destination))
    }

    static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        fsync(fd)
        close(fd)
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
        try bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    throw StoreError.io(path: path, operation: "write", errno: errno)
                }
                offset += written
            }
        }
    }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}
