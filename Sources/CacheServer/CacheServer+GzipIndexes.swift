#if canImport(Glibc)
import Glibc
#endif
import Blocking
import CLinux
import ContentStore
import Foundation
import GzipIndex
import NIOHTTP1
import OCI
import Registry

/// `slipway serve --index`: every plain gzip layer the cache fills gets a gzip index, built from the bytes as they
/// arrive (following the fill's partial file, so the download never waits for it), and every image whose layers
/// have one gets a referrer artifact, answered on the Referrers API and on the fallback tag: clients of the cache
/// mount the image lazily without anyone converting it, and without the upstream knowing.
extension CacheServer {
    /// Where the index blob of each layer is recorded: `ROOT/gzip-indexes/ALGORITHM/HEX` holds its descriptor.
    func indexRecordPath(for layer: Digest) -> String { "\(store.root)/gzip-indexes/\(layer.algorithm.rawValue)/\(layer.hex)" }

    /// The index blob of `layer`, when the cache built one and still has it.
    func indexBlob(for layer: Digest) -> Descriptor? {
        guard let data = FileManager.default.contents(atPath: indexRecordPath(for: layer)),
            let descriptor = try? JSONDecoder().decode(Descriptor.self, from: data), store.hasBlob(descriptor)
        else { return nil }
        return descriptor
    }

    /// Builds the index of a gzip layer while its fill runs, when asked to and none exists yet.
    func indexWhileFilling(_ fill: BlobFill) {
        let layer = fill.descriptor
        guard configuration.buildGzipIndexes, GzipIndexArtifact.isIndexable(layer) else { return }
        metrics.adjust(.indexBuildsInFlight, by: 1)
        Task {
            defer { metrics.adjust(.indexBuildsInFlight, by: -1) }
            do {
                if try await runBlocking({ [self] in indexBlob(for: layer.digest) }) != nil { return }
                let began = ContinuousClock.now
                // The fill checks the digest of the bytes it writes; the index is kept only once it has. Inflating
                // costs about a gunzip of the layer: on a thread of low priority, so that fills and the clients
                // waiting for them go first, and the index is ready a little later.
                let index = try await runBlocking { [self] in
                    _ = slipway_lower_thread_priority(15)
                    return try GzipIndexBuilder.build(layer: layer, digestVerified: true, next: followingReader(fill))
                }
                guard case .committed? = try await committed(fill) else {
                    throw GzipIndexError.unreadableLayer("the fill did not commit the blob")
                }
                try await runBlocking { [self] in try recordIndex(index, of: layer.digest) }
                metrics.add(.indexesBuilt)
                logger.info("indexed \(layer.digest): \(index.checkpoints.count) checkpoints, \(index.entries.count) entries in \(began.duration(to: .now))")
            } catch {
                metrics.add(.indexBuildFailures)
                logger.warning("no gzip index for \(layer.digest): \(error)")
            }
        }
    }

    /// The fill's outcome once it has one.
    private func committed(_ fill: BlobFill) async throws -> BlobFill.Outcome? {
        while true {
            let snapshot = fill.snapshot
            if let outcome = snapshot.outcome { return outcome }
            if snapshot.verified {
                // Matched its digest; the commit (an fsync and a rename) follows at once.
                try await Task.sleep(for: .milliseconds(10))
            } else {
                _ = try await fill.wait(beyond: fill.descriptor.size, generation: snapshot.generation)
            }
        }
    }

    private func recordIndex(_ index: GzipIndex, of layer: Digest) throws {
        let blob = try store.writeBlob(try index.encoded(), mediaType: GzipIndex.layerMediaType)
        usage.added(blob.digest, size: blob.size)
        let path = indexRecordPath(for: layer)
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try AtomicFile.write(Array(try JSONEncoder.canonical.encode(blob)), to: path)
    }

    /// The fill's bytes in order as they arrive, read from its partial file (or from the store when another
    /// process fetched the blob); fails when the fill fails or restarts, since bytes already indexed may be wrong.
    private func followingReader(_ fill: BlobFill) -> () throws -> [UInt8]? {
        let size = fill.descriptor.size
        let blobPath = store.blobPath(fill.descriptor.digest)
        var offset: Int64 = 0
        var generation: Int?
        var ownDescriptor: Int32 = -1
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        return {
            guard offset < size else {
                if ownDescriptor >= 0 { close(ownDescriptor) }
                return nil
            }
            var snapshot = fill.snapshot
            if generation == nil { generation = snapshot.generation }
            while true {
                guard snapshot.generation == generation else { throw GzipIndexError.unreadableLayer("the fill restarted") }
                if case .failed(let reason)? = snapshot.outcome { throw GzipIndexError.unreadableLayer("the fill failed: \(reason)") }
                let available: Int64 = if case .committed? = snapshot.outcome { size } else { snapshot.available }
                if available > offset { break }
                snapshot = fill.waitBlocking(beyond: offset, generation: generation!)
            }
            var fd = fill.readDescriptor
            if fd < 0 {
                if ownDescriptor < 0 { ownDescriptor = open(blobPath, O_RDONLY | O_CLOEXEC) }
                fd = ownDescriptor
                guard fd >= 0 else { throw GzipIndexError.unreadableLayer("the blob is neither filling nor in the store") }
            }
            let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
            guard count > 0 else { throw GzipIndexError.unreadableLayer("reading the partial blob at \(offset): errno \(errno)") }
            offset += Int64(count)
            return Array(buffer[..<count])
        }
    }

    // MARK: Referrers

    /// The index artifact of the manifest `subject` (in the store), composed from its layers' indexes and stored;
    /// nil when the manifest is unknown here or none of its layers has an index.
    func indexArtifact(for subject: Digest) throws -> Descriptor? {
        guard let bytes = try? store.readBlob(subject, limit: 4 << 20),
            case .manifest(let manifest)? = try? ManifestDocument.decode(bytes, contentType: nil)
        else { return nil }
        let blobs = manifest.layers.compactMap { layer -> Descriptor? in
            guard GzipIndexArtifact.isIndexable(layer), let blob = indexBlob(for: layer.digest) else { return nil }
            return GzipIndexArtifact.indexBlob(blob, of: layer.digest)
        }
        guard !blobs.isEmpty else { return nil }
        let subjectDescriptor = Descriptor(mediaType: manifest.mediaType ?? MediaType.ociManifest, digest: subject, size: Int64(bytes.count))
        let (artifact, artifactBytes) = try GzipIndexArtifact.manifest(subject: subjectDescriptor, blobs: blobs)
        if !store.hasBlob(artifact) {
            let empty = GzipIndexArtifact.emptyConfig
            if !store.hasBlob(empty) { _ = try store.writeBlob(GzipIndexArtifact.emptyConfigBytes, mediaType: empty.mediaType, expected: empty.digest) }
            _ = try store.writeBlob(artifactBytes, mediaType: artifact.mediaType, expected: artifact.digest)
        }
        return artifact
    }

    /// `GET /v2/NAME/referrers/DIGEST[?artifactType=T]`: upstream's referrers (when it can say) and, unless they
    /// include a gzip index already, this cache's index artifact, as an image index.
    func serveReferrers(name: String, subject: Digest, query: [String: String], namespace: String?, response: ResponseWriter) async throws {
        let index = try await referrersIndex(name: name, subject: subject, artifactType: query["artifactType"], namespace: namespace)
        var headers: HTTPHeaders = ["Content-Type": MediaType.ociIndex]
        if query["artifactType"] != nil { headers.add(name: "OCI-Filters-Applied", value: "artifactType") }
        try await response.send(.ok, headers: headers, body: Array(try JSONEncoder.canonical.encode(index)))
    }

    /// The fallback tag `sha256-HEX` of a manifest, answered for registries (docker-registry 2.8) and clients
    /// without the Referrers API: the same list, stored so that it can also be fetched by digest.
    func referrersTagManifest(name: String, tag: String, namespace: String?) async throws -> (Descriptor, [UInt8])? {
        guard configuration.buildGzipIndexes, tag.hasPrefix("sha256-"), let subject = try? Digest("sha256:" + tag.dropFirst("sha256-".count)),
            try await runBlocking({ [self] in try indexArtifact(for: subject) }) != nil
        else { return nil }
        let index = try await referrersIndex(name: name, subject: subject, artifactType: nil, namespace: namespace)
        let bytes = Array(try JSONEncoder.canonical.encode(index))
        let descriptor = try await runBlocking { [store] in try store.writeBlob(bytes, mediaType: MediaType.ociIndex) }
        return (descriptor, bytes)
    }

    private func referrersIndex(name: String, subject: Digest, artifactType: String?, namespace: String?) async throws -> Index {
        let upstream = try upstream(for: namespace)
        var listed: [Descriptor] = []
        do {
            listed = try await upstream.client.referrers(repository: upstream.repository(for: name), subject: subject, artifactType: artifactType)
        } catch {
            logger.info("upstream referrers of \(subject) unavailable: \(error)")
        }
        // An index pushed upstream (perhaps with the workload's prioritized files) is the image owner's: it wins
        // over the one this cache would compose.
        if configuration.buildGzipIndexes, artifactType == nil || artifactType == GzipIndex.artifactType,
            !listed.contains(where: { $0.artifactType == GzipIndex.artifactType }),
            let ours = try await runBlocking({ [self] in try indexArtifact(for: subject) }), !listed.contains(where: { $0.digest == ours.digest })
        {
            listed.append(ours)
        }
        return Index(manifests: listed)
    }
}
