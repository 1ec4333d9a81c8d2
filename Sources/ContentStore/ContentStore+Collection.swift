#if canImport(Glibc)
import Glibc
#endif
import Foundation
import OCI

/// Garbage collection: everything not reachable from a named image goes — blobs, extracted layers, SIF files,
/// and the leftovers of interrupted downloads and conversions.
extension ContentStore {
    public struct CollectionReport: Sendable, Codable {
        public var removedBlobs = 0
        public var removedLayers = 0
        public var removedPartials = 0
        public var removedSIFs = 0
        public var freedBytes: Int64 = 0
    }

    public func collectGarbage(dryRun: Bool = false) throws -> CollectionReport {
        let lock = try lockForCollection()
        defer { lock.release() }
        var liveBlobs = Set<Digest>()
        var liveLayers = Set<Digest>()
        var liveTOCs = Set<Digest>()
        let roots = try readIndex().manifests
        // Referrers (gzip indexes) live as long as their subject: marked after the images.
        var pending = roots.filter { $0.annotations?[Self.subjectAnnotation] == nil }
        var referrers = roots.filter { $0.annotations?[Self.subjectAnnotation] != nil }
        var orphans: [Descriptor] = []
        // Marking reads every reachable document; anything unreadable stops gc before it removes a byte, since a
        // misread would make live content look like garbage.
        while true {
            if pending.isEmpty {
                // Only once every image is marked is a referrer's subject known to be live or not.
                for referrer in referrers {
                    let subject = referrer.annotations?[Self.subjectAnnotation].flatMap { try? Digest($0) }
                    if let subject, liveBlobs.contains(subject) { pending.append(referrer) } else { orphans.append(referrer) }
                }
                referrers = []
            }
            guard let descriptor = pending.popLast() else { break }
            guard liveBlobs.insert(descriptor.digest).inserted,
                FileManager.default.fileExists(atPath: blobPath(descriptor.digest)),
                MediaType.isIndex(descriptor.mediaType) || MediaType.isManifest(descriptor.mediaType)
            else { continue }
            switch try ManifestDocument.decode(try readBlob(descriptor.digest), contentType: descriptor.mediaType) {
            case .index(let index): pending += index.manifests
            case .manifest(let manifest):
                liveBlobs.formUnion(manifest.layers.map(\.digest))
                liveTOCs.formUnion(manifest.layers.compactMap { $0.annotations?[tocDigestAnnotation].flatMap { try? Digest($0) } })
                liveBlobs.insert(manifest.config.digest)
                // An artifact's config is not an image config (OCI's empty `{}` for Slipway's indexes).
                guard manifest.artifactType == nil, FileManager.default.fileExists(atPath: blobPath(manifest.config.digest)) else { continue }
                do {
                    let config = try JSONDecoder().decode(ImageConfig.self, from: Data(try readBlob(manifest.config.digest)))
                    liveLayers.formUnion(config.rootfs.diff_ids)
                } catch {
                    throw StoreError.corrupt(
                        path: blobPath(manifest.config.digest), reason: "gc stopped, nothing removed: cannot read this image config (\(error))")
                }
            }
        }
        var report = CollectionReport()
        if !orphans.isEmpty, !dryRun {
            let orphaned = Set(orphans.map(\.digest))
            try withIndexLock {
                var index = try readIndex()
                index.manifests.removeAll { $0.annotations?[Self.subjectAnnotation] != nil && orphaned.contains($0.digest) }
                try writeIndex(index)
            }
        }
        let fileManager = FileManager.default
        for algorithm in [Digest.Algorithm.sha256, .sha512] {
            let directory = "\(root)/blobs/\(algorithm.rawValue)"
            for name in (try? fileManager.contentsOfDirectory(atPath: directory)) ?? [] {
                guard let digest = try? Digest(algorithm: algorithm, hex: name), !liveBlobs.contains(digest) else {
                    if name.hasPrefix(".tmp-") { report.freedBytes += remove("\(directory)/\(name)", dryRun: dryRun); report.removedPartials += 1 }
                    continue
                }
                report.freedBytes += remove("\(directory)/\(name)", dryRun: dryRun)
                report.removedBlobs += 1
            }
            // SIF files (`slipway convert --to sif`) are kept by manifest digest, each with the index of its
            // squashfs blocks (`.blocks`); an interrupted conversion leaves a `.tmp-` file there.
            // OCI-SIF files are kept the same way, and the squashfs image of each layer they hold by its diffID.
            let sifFiles = ["sif", "oci-sif"].flatMap { kind in
                let directory = "\(root)/\(kind)/\(algorithm.rawValue)"
                return ((try? fileManager.contentsOfDirectory(atPath: directory)) ?? []).map { (directory, $0) }
            }
            for (directory, name) in sifFiles {
                if name.hasPrefix(".tmp-") {
                    report.freedBytes += remove("\(directory)/\(name)", dryRun: dryRun)
                    report.removedPartials += 1
                    continue
                }
                for suffix in [".sif", ".blocks"] where name.hasSuffix(suffix) {
                    guard let digest = try? Digest(algorithm: algorithm, hex: String(name.dropLast(suffix.count))), !liveBlobs.contains(digest) else { continue }
                    report.freedBytes += remove("\(directory)/\(name)", dryRun: dryRun)
                    if suffix == ".sif" { report.removedSIFs += 1 }
                }
            }
            // What is kept per layer beside its directory (squashfs images for OCI-SIFs, entry listings) goes with it.
            for (kind, suffix) in [("squashfs-layers", ".sqfs"), ("layer-entries", "")] {
                let directory = "\(root)/\(kind)/\(algorithm.rawValue)"
                for name in (try? fileManager.contentsOfDirectory(atPath: directory)) ?? [] {
                    let hex = name.hasSuffix(suffix) ? String(name.dropLast(suffix.count)) : name
                    if let digest = try? Digest(algorithm: algorithm, hex: hex), liveLayers.contains(digest) { continue }
                    report.freedBytes += remove("\(directory)/\(name)", dryRun: dryRun)
                    if name.hasPrefix(".tmp-") { report.removedPartials += 1 }
                }
            }
            for (directory, live) in [("layers/\(algorithm.rawValue)", liveLayers), ("layers/toc/\(algorithm.rawValue)", liveTOCs)] {
                let layers = "\(root)/\(directory)"
                for name in (try? fileManager.contentsOfDirectory(atPath: layers)) ?? [] {
                    guard let digest = try? Digest(algorithm: algorithm, hex: name), live.contains(digest) else {
                        report.freedBytes += remove("\(layers)/\(name)", dryRun: dryRun)
                        report.removedLayers += 1
                        continue
                    }
                }
            }
        }
        // With the store lock exclusive no download is running, so every partial file is abandoned.
        for name in (try? fileManager.contentsOfDirectory(atPath: "\(root)/ingest")) ?? [] {
            report.freedBytes += remove("\(root)/ingest/\(name)", dryRun: dryRun)
            if !name.hasSuffix(".lock") { report.removedPartials += 1 }
        }
        return report
    }

    private func remove(_ path: String, dryRun: Bool) -> Int64 {
        let size = diskUsage(path)
        if !dryRun { try? FileManager.default.removeItem(atPath: path) }
        return size
    }

    func diskUsage(_ path: String) -> Int64 {
        var info = stat()
        guard lstat(path, &info) == 0 else { return 0 }
        if (info.st_mode & S_IFMT) != S_IFDIR { return Int64(info.st_size) }
        var total: Int64 = 0
        if let enumerator = FileManager.default.enumerator(atPath: path) {
            for case let child as String in enumerator {
                var childInfo = stat()
                if lstat("\(path)/\(child)", &childInfo) == 0, (childInfo.st_mode & S_IFMT) == S_IFREG { total += Int64(childInfo.st_size) }
            }
        }
        return total
    }
}
