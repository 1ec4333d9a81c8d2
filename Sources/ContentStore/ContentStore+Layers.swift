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
        try await ensureDirectory(layerDirectory(diffID), named: "layer-\(diffID.hex)") { temporary in
            let actual = try await extract(temporary)
            guard actual == diffID else {
                throw StoreError.corrupt(path: temporary, reason: "the layer unpacks to \(actual), not to its diffID \(diffID)")
            }
        }
    }

    /// An eStargz layer written from its TOC and verified chunks rather than from its tar, whose diffID was never
    /// computed: it is named by the TOC's digest, so only a layer annotated with that TOC (verified against the
    /// blob when mounted) ever uses it, and a blob that lies about its diffID cannot poison the diffID cache.
    public func materializedLayerDirectory(toc: Digest) -> String { "\(root)/layers/toc/\(toc.algorithm.rawValue)/\(toc.hex)" }

    public func hasMaterializedLayer(toc: Digest) -> Bool {
        FileManager.default.fileExists(atPath: materializedLayerDirectory(toc: toc))
    }

    /// Writes a materialized layer unless present, as `ensureLayerDirectory` does (a temporary directory renamed
    /// into place once complete: an interrupted materialization leaves nothing a run could use).
    @discardableResult
    public func ensureMaterializedLayer(toc: Digest, write: (String) async throws -> Void) async throws -> Bool {
        try await ensureDirectory(materializedLayerDirectory(toc: toc), named: "toc-\(toc.hex)", fill: write)
    }

    private func ensureDirectory(_ final: String, named name: String, fill: (String) async throws -> Void) async throws -> Bool {
        if FileManager.default.fileExists(atPath: final) { return false }
        try FileManager.default.createDirectory(atPath: (final as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let lock = try await FileLock.acquire("\(root)/ingest/\(name).lock", mode: .exclusive)
        defer { lock.release() }
        if FileManager.default.fileExists(atPath: final) { return false }
        let temporary = "\(root)/ingest/\(name).extracting"
        try? FileManager.default.removeItem(atPath: temporary)
        let partial = PartialOutput.register(temporary)
        defer { partial.end() }
        try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: false)
        do {
            try await fill(temporary)
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
