import ContentStore
import Foundation
import ImageTree
import OCI

/// The entries of the store's layer directories, each walked once and kept in the store by diffID
/// (`layer-entries/ALG/HEX`): a layer directory never changes once extracted, and a patch release's SIF
/// conversion would otherwise spend most of its time in `lstat` and `llistxattr` over layers it has seen.
struct LayerEntryCache {
    let store: ContentStore

    func path(of diffID: Digest) -> String { "\(store.root)/layer-entries/\(diffID.algorithm.rawValue)/\(diffID.hex)" }

    /// The layer's entries, from the cache or walked now (and cached). Blocking: call it off the cooperative pool.
    func entries(of diffID: Digest) throws -> [LayerEntry] {
        let root = store.layerDirectory(diffID)
        let cached = path(of: diffID)
        if let bytes = FileManager.default.contents(atPath: cached), let entries = LayerEntryListing.decode(Array(bytes), root: root) {
            return entries
        }
        let entries = try LayerEntries.fromDirectory(root)
        // A listing that cannot be kept costs the next conversion a walk, nothing else.
        try? FileManager.default.createDirectory(atPath: (cached as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try? AtomicFile.write(LayerEntryListing.encode(entries, root: root), to: cached)
        return entries
    }
}
