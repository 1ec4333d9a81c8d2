#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Blocking
import Foundation
import OCI

/// The per-layer extraction cache: one directory per layer diffID under `layers/`, extracted once and shared by
/// every image that contains the layer (later runs overlay these read-only instead of copying them).
extension ContentStore {
    public func layerDirectory(_ diffID: Digest) -> String { "\(root)/layers/\(diffID.algorithm.rawValue)/\(diffID.hex)" }

    public func hasLayerDirectory(_ diffID: Digest) -> Bool {
        FileManager.default.fileExists(atPath: layerDirectory(diffID))
    }

    /// Extracts a layer into the cache unless present. `extract` fills a fresh temporary directory and returns the
    /// diffID it computed; the directory is renamed into place only when that matches, so a crash or a lie leaves
    /// nothing visible.
    @discardableResult
    public func ensureLayerDirectory(_ diffID: Digest, extract: (String) async throws -> Digest) async throws -> Bool {
        let final = layerDirectory(diffID)
        if hasLayerDirectory(diffID) { return false }
        try FileManager.default.createDirectory(atPath: "\(root)/layers/\(diffID.algorithm.rawValue)", withIntermediateDirectories: true)
        let lock = try await FileLock.acquire("\(root)/ingest/layer-\(diffID.hex).lock", mode: .exclusive)
        defer { lock.release() }
        if hasLayerDirectory(diffID) { return false }
        let temporary = "\(root)/ingest/layer-\(diffID.hex).extracting"
        try? FileManager.default.removeItem(atPath: temporary)
        let partial = PartialOutput.register(temporary)
        defer { partial.end() }
        try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: false)
        do {
            let actual = try await extract(temporary)
            guard actual == diffID else {
                throw StoreError.corrupt(path: temporary, reason: "the layer unpacks to \(actual), not to its diffID \(diffID)")
            }
            // Flush the extracted files before the rename publishes them; only this filesystem, not the node's.
            try await runBlocking {
                let fd = open(temporary, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                if fd >= 0 {
                    syncfs(fd)
                    close(fd)
                }
                try AtomicFile.rename(temporary, to: final)
            }
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        }
        return true
    }
}
