import Crypto
import Foundation
import ImageTree

#if canImport(Glibc)
import Glibc
#endif

/// A regular file of the tree being squashed: its bytes are in the layer cache or were made in memory.
struct SourceFile: Sendable {
    enum Content: Sendable {
        case local(String)
        case bytes([UInt8])
    }

    /// Path in the image, for messages.
    let path: String
    let size: Int64
    let content: Content

    init(path: String, size: Int64, content: FileContent?) throws(SquashfsError) {
        self.path = path
        self.size = size
        switch content {
        case .some(.local(let source)): self.content = .local(source)
        case .some(.bytes(let bytes)): self.content = .bytes(bytes)
        case .some(.estargz), nil:
            guard size == 0 else { throw .notLocal(path: path) }
            self.content = .bytes([])
        }
    }

    /// An open file to read from; closed by `close()`.
    struct Reader {
        let file: SourceFile
        let descriptor: Int32

        /// Exactly `count` bytes from `offset`: a file shorter than the size its layer recorded is an error.
        func read(at offset: Int64, count: Int) throws(SquashfsError) -> [UInt8] {
            if case .bytes(let bytes) = file.content {
                guard offset >= 0, offset + Int64(count) <= Int64(bytes.count) else { throw shortFile() }
                return Array(bytes[Int(offset)..<Int(offset) + count])
            }
            var result = [UInt8](repeating: 0, count: count)
            var done = 0
            while done < count {
                let got = result.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress! + done, count - done, Int(offset) + done) }
                if got < 0, errno == EINTR { continue }
                if got < 0 { throw .io(path: sourceName, reason: String(cString: strerror(errno))) }
                guard got > 0 else { throw shortFile() }
                done += got
            }
            return result
        }

        func close() { if descriptor >= 0 { Glibc.close(descriptor) } }

        private var sourceName: String {
            if case .local(let source) = file.content { return source }
            return "/" + file.path
        }

        private func shortFile() -> SquashfsError {
            .io(path: sourceName, reason: "shorter than the \(file.size) bytes its layer recorded")
        }
    }

    func open() throws(SquashfsError) -> Reader {
        guard case .local(let source) = content else { return Reader(file: self, descriptor: -1) }
        let descriptor = Glibc.open(source, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw .io(path: source, reason: String(cString: strerror(errno))) }
        return Reader(file: self, descriptor: descriptor)
    }

    /// The layer-cache file the bytes are in, if any.
    var localPath: String? {
        if case .local(let path) = content { return path }
        return nil
    }

    /// sha256 of the file's bytes, read in 1 MiB pieces.
    func digest() throws(SquashfsError) -> ContentKey {
        let reader = try open()
        defer { reader.close() }
        var hasher = SHA256()
        var offset: Int64 = 0
        while offset < size {
            let count = Int(min(1 << 20, size - offset))
            hasher.update(data: try reader.read(at: offset, count: count))
            offset += Int64(count)
        }
        return ContentKey(hasher.finalize())
    }

    /// The digests of `files`, computed on `workers` threads, except those `known` has by layer-cache path.
    static func digests(of files: [SourceFile], known: [String: ContentKey], workers: Int) throws(SquashfsError) -> [ContentKey] {
        let results = DigestResults(count: files.count)
        for (index, file) in files.enumerated() {
            if let path = file.localPath, let key = known[path] { results.store(key, at: index) }
        }
        let group = DispatchGroup()
        for _ in 0..<max(1, workers) {
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                while let index = results.claim() {
                    if results.has(index) { continue }
                    do throws(SquashfsError) {
                        results.store(try files[index].digest(), at: index)
                    } catch {
                        results.fail(error)
                    }
                }
            }
            thread.name = "squashfs-digest"
            thread.start()
        }
        group.wait()
        return try results.finished()
    }
}

private final class DigestResults: @unchecked Sendable {
    private let lock = NSLock()
    private var next = 0
    private var digests: [ContentKey?]
    private var failure: SquashfsError?

    init(count: Int) { digests = Array(repeating: nil, count: count) }

    func claim() -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard failure == nil, next < digests.count else { return nil }
        next += 1
        return next - 1
    }

    func has(_ index: Int) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return digests[index] != nil
    }

    func store(_ digest: ContentKey, at index: Int) {
        lock.lock()
        digests[index] = digest
        lock.unlock()
    }

    func fail(_ error: SquashfsError) {
        lock.lock()
        if failure == nil { failure = error }
        lock.unlock()
    }

    func finished() throws(SquashfsError) -> [ContentKey] {
        if let failure { throw failure }
        return digests.map { $0! }
    }
}
