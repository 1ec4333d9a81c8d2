import Blocking
import ContentStore
import Foundation
import NIOHTTP1
import OCI
import Registry

extension CacheServer {
    /// Manifests by digest come from the store for ever once fetched; tags are served from the store within their
    /// TTL, then revalidated with HEAD (free against Docker Hub's pull limit) and fetched again only when they
    /// moved. An unreachable upstream leaves the cached tag in service.
    func serveManifest(
        name: String, reference: RegistryRoute.ManifestReference, namespace: String?, request: HTTPRequest, response: ResponseWriter,
        outcome: inout Outcome
    ) async throws {
        let upstream = try upstream(for: namespace)
        let digest: Digest
        switch reference {
        case .digest(let requested):
            if FileManager.default.fileExists(atPath: store.blobPath(requested)) {
                outcome.cache = "hit"
            } else {
                _ = try await fetchManifest(upstream: upstream, name: name, reference: requested.description, storeName: nil)
                outcome.cache = "miss"
            }
            digest = requested
        case .tag(let tag):
            if let (descriptor, bytes) = try await referrersTagManifest(name: name, tag: tag, namespace: namespace) {
                outcome.cache = "referrers"
                let headers: HTTPHeaders = ["Content-Type": descriptor.mediaType, "Docker-Content-Digest": descriptor.digest.description]
                try await response.send(.ok, headers: headers, body: bytes)
                return
            }
            let resolved: Descriptor
            (resolved, outcome.cache) = try await resolveTag(upstream: upstream, name: name, tag: tag)
            digest = resolved.digest
        }
        metrics.add(outcome.cache == "miss" ? .manifestMisses : .manifestHits)
        var loaded = loadManifest(digest)
        if loaded == nil {
            // Damaged in the store (a shared filesystem can be written by others): fetched again, by digest.
            unlink(store.blobPath(digest))
            _ = try await fetchManifest(upstream: upstream, name: name, reference: digest.description, storeName: nil)
            loaded = loadManifest(digest)
        }
        guard let (descriptor, bytes) = loaded else {
            throw RegistryErrorAnswer(status: 500, code: "UNKNOWN", message: "the manifest \(digest) is unreadable in the store even after fetching it again")
        }
        usage.used(descriptor.digest)
        let accept = request.headers[canonicalForm: "Accept"].map(String.init)
        if !accept.isEmpty, !accept.contains(where: { ManifestDocument.stripParameters($0) == descriptor.mediaType || $0.hasPrefix("*/*") }) {
            throw RegistryErrorAnswer(
                status: 404, code: "MANIFEST_UNKNOWN",
                message: "the manifest is a \(descriptor.mediaType), which the request's Accept header does not list")
        }
        var headers: HTTPHeaders = [
            "Content-Type": descriptor.mediaType, "Docker-Content-Digest": descriptor.digest.description, "ETag": "\"\(descriptor.digest)\"",
        ]
        if let namespace, !namespace.isEmpty { headers.add(name: "OCI-Namespace", value: upstream.registry) }
        try await response.send(.ok, headers: headers, body: bytes)
    }

    private func resolveTag(upstream: Upstream, name: String, tag: String) async throws -> (Descriptor, String) {
        let storeName = upstream.storeName(for: name, tag: tag)
        let local = (try? store.image(named: storeName)).flatMap { $0 }.flatMap { store.hasBlob($0) ? $0 : nil }
        guard let local else {
            do {
                return (try await fetchManifest(upstream: upstream, name: name, reference: tag, storeName: storeName), "miss")
            } catch {
                throw answer(for: error, what: "manifest")
            }
        }
        if let validated = validatedTags.withLock({ $0[storeName] }), ContinuousClock.now - validated < configuration.tagTTL {
            return (local, "hit")
        }
        metrics.add(.manifestRevalidations)
        let current: Descriptor
        do {
            current = try await manifestFetches.run("HEAD \(storeName)") {
                try await upstream.client.resolve(repository: upstream.repository(for: name), reference: tag)
            }
        } catch RegistryError.notFound {
            throw RegistryErrorAnswer.manifestUnknown("\(name):\(tag) (no longer upstream)")
        } catch {
            logger.warning("serving \(storeName) from the cache: upstream could not confirm it (\(error))")
            metrics.add(.staleManifestsServed)
            return (local, "stale")
        }
        if current.digest == local.digest {
            validatedTags.withLock { $0[storeName] = .now }
            return (local, "revalidated")
        }
        do {
            return (try await fetchManifest(upstream: upstream, name: name, reference: current.digest.description, storeName: storeName), "miss")
        } catch {
            logger.warning("serving \(storeName) from the cache: the new manifest \(current.digest) could not be fetched (\(error))")
            metrics.add(.staleManifestsServed)
            return (local, "stale")
        }
    }

    /// A manifest from the store, verified against its digest, with its media type; the sizes of the blobs it names
    /// are remembered so a miss on them needs no HEAD upstream. Nil when absent or damaged.
    private func loadManifest(_ digest: Digest) -> (Descriptor, [UInt8])? {
        guard let bytes = try? store.readBlob(digest, limit: 4 << 20), let document = try? ManifestDocument.decode(bytes, contentType: nil) else {
            return nil
        }
        learnBlobs(of: document)
        return (Descriptor(mediaType: document.mediaType, digest: digest, size: Int64(bytes.count)), bytes)
    }

    /// Fetches a manifest (verified by the registry client against its digest), stores it, and names it when it
    /// was asked for by tag. Concurrent requests for the same manifest share one upstream GET.
    private func fetchManifest(upstream: Upstream, name: String, reference: String, storeName: String?) async throws -> Descriptor {
        let key = "\(upstream.registry)/\(upstream.repository(for: name))@\(reference)"
        do {
            return try await manifestFetches.run(key) { [self] in
                let fetched = try await upstream.client.fetchManifest(repository: upstream.repository(for: name), reference: reference)
                metrics.add(.upstreamBytes, Int64(fetched.bytes.count))
                // The store's writes end in fsyncs of the file and its directory.
                let descriptor = try await runBlocking { [store] in
                    try store.writeBlob(fetched.bytes, mediaType: fetched.descriptor.mediaType, expected: fetched.descriptor.digest)
                }
                usage.added(descriptor.digest, size: descriptor.size)
                learnBlobs(of: fetched.document)
                if let storeName {
                    try await runBlocking { [store] in try store.setImage(named: storeName, to: descriptor) }
                    validatedTags.withLock { $0[storeName] = .now }
                }
                return descriptor
            }
        } catch {
            throw answer(for: error, what: "manifest")
        }
    }

    private func learnBlobs(of document: ManifestDocument) {
        let descriptors: [Descriptor]
        switch document {
        case .manifest(let manifest): descriptors = [manifest.config] + manifest.layers
        case .index(let index): descriptors = index.manifests
        }
        knownBlobs.withLock { known in
            if known.count > 100_000 { known.removeAll() }
            for descriptor in descriptors { known[descriptor.digest] = descriptor }
        }
    }

    /// Tags from upstream, or from the store's names when upstream cannot be asked; `n` and `last` as the spec says.
    func serveTags(name: String, query: [String: String], namespace: String?, response: ResponseWriter) async throws {
        let upstream = try upstream(for: namespace)
        let repository = upstream.repository(for: name)
        var tags: [String]
        do {
            tags = try await upstream.client.listTags(repository: repository)
        } catch RegistryError.notFound {
            throw RegistryErrorAnswer(status: 404, code: "NAME_UNKNOWN", message: "repository \(name) not known upstream")
        } catch {
            let prefix = "\(upstream.registry)/\(repository):"
            tags = ((try? store.images()) ?? []).map(\.name).filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
            guard !tags.isEmpty else { throw answer(for: error, what: "tag list") }
        }
        tags.sort()
        if let last = query["last"] { tags = tags.filter { $0 > last } }
        if let count = query["n"].flatMap(Int.init), count >= 0 { tags = Array(tags.prefix(count)) }
        struct TagList: Encodable {
            var name: String
            var tags: [String]
        }
        let body = try JSONEncoder().encode(TagList(name: name, tags: tags))
        try await response.send(.ok, headers: ["Content-Type": "application/json"], body: Array(body))
    }
}
