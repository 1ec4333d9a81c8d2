#if canImport(Glibc)
import Glibc
#endif
import ContentStore
import Foundation
import OCI
import Synchronization

/// Blob sizes and last use, for the size limit: the least recently used blobs go first. Use is remembered in
/// memory and written to the blob's mtime (at most once a minute per blob), so a restarted server keeps the
/// order without a database.
final class StoreUsage: Sendable {
    private struct Entry {
        var size: Int64
        var lastUse: Date
        var touched: Date
    }
    private struct State {
        var entries: [Digest: Entry] = [:]
        var total: Int64 = 0
    }
    private let state = Mutex(State())
    private let store: ContentStore
    let limit: Int64?

    init(store: ContentStore, limit: Int64?) {
        self.store = store
        self.limit = limit
        let directory = "\(store.root)/blobs/sha256"
        var entries: [Digest: Entry] = [:]
        var total: Int64 = 0
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            guard let digest = try? Digest(algorithm: .sha256, hex: name) else { continue }
            var info = stat()
            guard stat("\(directory)/\(name)", &info) == 0 else { continue }
            let modified = Date(timeIntervalSince1970: Double(info.st_mtim.tv_sec))
            entries[digest] = Entry(size: Int64(info.st_size), lastUse: modified, touched: modified)
            total += Int64(info.st_size)
        }
        state.withLock { $0 = State(entries: entries, total: total) }
    }

    var totalBytes: Int64 { state.withLock { $0.total } }

    func added(_ digest: Digest, size: Int64) {
        state.withLock { state in
            if state.entries[digest] == nil { state.total += size }
            state.entries[digest] = Entry(size: size, lastUse: Date(), touched: Date())
        }
    }

    func used(_ digest: Digest) {
        let touch = state.withLock { state -> Bool in
            guard var entry = state.entries[digest] else { return false }
            entry.lastUse = Date()
            let due = entry.lastUse.timeIntervalSince(entry.touched) > 60
            if due { entry.touched = entry.lastUse }
            state.entries[digest] = entry
            return due
        }
        if touch { utimes(store.blobPath(digest), nil) }
    }

    /// Removes least recently used blobs until the store is under 90 % of the limit, sparing `keep` (blobs being
    /// served or filled right now are safe anyway: an open file outlives its name). Returns what it removed.
    func evictIfNeeded(keep: Set<Digest>) -> [(Digest, Int64)] {
        guard let limit else { return [] }
        let victims = state.withLock { state -> [(Digest, Int64)] in
            guard state.total > limit else { return [] }
            let target = limit / 10 * 9
            var victims: [(Digest, Int64)] = []
            var total = state.total
            for (digest, entry) in state.entries.sorted(by: { $0.value.lastUse < $1.value.lastUse }) where !keep.contains(digest) {
                guard total > target else { break }
                victims.append((digest, entry.size))
                total -= entry.size
            }
            for (digest, size) in victims {
                state.entries.removeValue(forKey: digest)
                state.total -= size
            }
            return victims
        }
        for (digest, _) in victims { unlink(store.blobPath(digest)) }
        return victims
    }
}
