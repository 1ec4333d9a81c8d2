#if canImport(Glibc)
import Glibc
#endif
import ContentStore
import NIOCore
import NIOHTTP1
import OCI
import Registry

extension CacheServer {
    func serveBlob(name: String, digest: Digest, namespace: String?, request: HTTPRequest, response: ResponseWriter, outcome: inout Outcome) async throws {
        var headers: HTTPHeaders = [
            "Content-Type": "application/octet-stream", "Docker-Content-Digest": digest.description, "ETag": "\"\(digest)\"",
        ]
        let rangeHeader = request.headers.first(name: "Range")
        // A committed blob: straight from the store.
        let fd = open(store.blobPath(digest), O_RDONLY | O_CLOEXEC)
        if fd >= 0 {
            defer { close(fd) }
            var info = stat()
            fstat(fd, &info)
            metrics.add(.blobHits)
            usage.used(digest)
            outcome.cache = "hit"
            headers.add(name: "Cache-Control", value: "max-age=31536000")
            let size = Int64(info.st_size)
            let allocator = response.allocator
            try await BlobResponse(size: size, headers: headers, ranges: ByteRangeRequest(header: rangeHeader, size: size)).send(to: response) {
                offset, length in try preadBuffer(fd, offset: offset, length: length, allocator: allocator)
            }
            return
        }
        let upstream = try upstream(for: namespace)
        let repository = upstream.repository(for: name)
        let descriptor = try await blobDescriptor(digest, upstream: upstream, repository: repository)
        guard request.method != .HEAD else {
            outcome.cache = "miss-head"
            headers.add(name: "Content-Length", value: String(descriptor.size))
            headers.add(name: "Accept-Ranges", value: "bytes")
            try await response.sendHead(.ok, headers: headers)
            try await response.end()
            return
        }
        let (fill, joined) = startOrJoinFill(descriptor, upstream: upstream, repository: repository)
        metrics.add(joined ? .blobFillJoins : .blobMisses)
        outcome.cache = joined ? "joined" : "miss"
        let ranges = ByteRangeRequest(header: rangeHeader, size: descriptor.size)
        if case .partial(let wanted) = ranges, shouldFetchUpstream(wanted, fill: fill) {
            outcome.cache = "range-upstream"
            metrics.add(.rangePassthroughs)
            // The fill has not got there yet: ask upstream for just these bytes. They are passed through as a
            // registry would serve them and never stored; the blob enters the store only whole and verified.
            let parts: [[UInt8]]
            do {
                parts = try await upstream.blob(descriptor, repository: repository).read(ranges: wanted)
            } catch {
                throw answer(for: error, what: "blob")
            }
            metrics.add(.upstreamBytes, Int64(parts.reduce(0) { $0 + $1.count }))
            let allocator = response.allocator
            try await BlobResponse(size: descriptor.size, headers: headers, ranges: ranges).send(to: response) { offset, length in
                let index = wanted.firstIndex { $0.contains(offset) }!
                let start = Int(offset - wanted[index].lowerBound)
                return allocator.buffer(bytes: parts[index][start..<min(parts[index].count, start + length)])
            }
            return
        }
        let reader = FillReader(fill: fill, blobPath: store.blobPath(digest), allocator: response.allocator)
        try await BlobResponse(size: descriptor.size, headers: headers, ranges: ranges).send(to: response) { offset, length in
            try await reader.read(offset: offset, length: length)
        }
    }

    /// Whether a Range on a filling blob is better fetched upstream than waited for: it starts well beyond what
    /// the fill has written (a lazy pull's first read is the footer at the very end of the layer).
    private func shouldFetchUpstream(_ ranges: [Range<Int64>], fill: BlobFill) -> Bool {
        let snapshot = fill.snapshot
        if case .committed = snapshot.outcome { return false }
        let frontier = snapshot.available + configuration.rangeWaitDistance
        let total = ranges.reduce(0) { $0 + Int64($1.count) }
        return total <= 64 << 20 && ranges.contains { $0.upperBound > frontier }
    }

    /// Size and type of a blob not in the store: learnt from a manifest served earlier, else asked upstream.
    private func blobDescriptor(_ digest: Digest, upstream: Upstream, repository: String) async throws -> Descriptor {
        if let fill = fills.withLock({ $0[digest] }) { return fill.descriptor }
        if let known = knownBlobs.withLock({ $0[digest] }) { return known }
        let found: Descriptor?
        do {
            found = try await blobSizeLookups.run(digest) {
                try await upstream.client.blobDescriptor(repository: repository, digest: digest)
            }
        } catch {
            throw answer(for: error, what: "blob")
        }
        guard let found else { throw RegistryErrorAnswer.blobUnknown(digest.description) }
        return found
    }

    /// The running fill of a blob, or a new one. Fills run detached from the request that started them: a client
    /// that disconnects does not stop the others' download.
    private func startOrJoinFill(_ descriptor: Descriptor, upstream: Upstream, repository: String) -> (BlobFill, joined: Bool) {
        let (fill, created) = fills.withLock { fills -> (BlobFill, Bool) in
            if let running = fills[descriptor.digest] { return (running, false) }
            let fill = BlobFill(descriptor: descriptor)
            fills[descriptor.digest] = fill
            return (fill, true)
        }
        guard created else { return (fill, true) }
        metrics.add(.fillsStarted)
        metrics.adjust(.fillsInFlight, by: 1)
        Task { await runFill(fill, upstream: upstream, repository: repository) }
        indexWhileFilling(fill)
        return (fill, false)
    }

    private func runFill(_ fill: BlobFill, upstream: Upstream, repository: String) async {
        let descriptor = fill.descriptor
        let metrics = self.metrics
        let download = Task {
            try await store.ingest(descriptor) { sink in
                let forwarding = FillSink(inner: sink, fill: fill) { count in metrics.add(.upstreamBytes, Int64(count)) }
                try await upstream.blob(descriptor, repository: repository).fetch(into: forwarding)
                // The fetch returns only once the digest matched: clients may have the last byte now, without
                // waiting for the commit's fsync of a possibly large file.
                fill.verified()
            }
        }
        // The registry client retries a dropped connection; this watchdog bounds how long clients wait on an
        // upstream that keeps the connection open but sends nothing.
        let stallTimeout = configuration.upstreamStallTimeout
        let watchdog = Task {
            while !Task.isCancelled {
                try await Task.sleep(for: .milliseconds(250))
                if ContinuousClock.now - fill.lastProgress > stallTimeout {
                    download.cancel()
                    return true
                }
            }
            return false
        }
        let result = await download.result
        watchdog.cancel()
        let stalled = (try? await watchdog.value) ?? false
        fills.withLock { _ = $0.removeValue(forKey: descriptor.digest) }
        metrics.adjust(.fillsInFlight, by: -1)
        switch result {
        case .success:
            usage.added(descriptor.digest, size: descriptor.size)
            fill.finish(.committed)
            let busy = fills.withLock { Set($0.keys) }
            for (digest, size) in usage.evictIfNeeded(keep: busy.union([descriptor.digest])) {
                metrics.add(.evictedBlobs)
                metrics.add(.evictedBytes, size)
                logger.info("evicted \(digest) (\(size) bytes) to stay under the size limit")
            }
            metrics.set(.storeBytes, usage.totalBytes)
        case .failure(let error):
            metrics.add(.fillsFailed)
            store.discardPartial(descriptor.digest)
            let reason = stalled ? "upstream sent nothing for \(stallTimeout); the next request retries" : "\(error)"
            logger.warning("fill of \(descriptor.digest) from \(upstream.registry)/\(repository) failed: \(reason)")
            fill.finish(.failed(reason))
        }
    }
}

/// Reads a blob while its fill runs: bytes already in the partial file at once, later ones when they arrive. The
/// last byte is held back until the digest matched, so a client never completes a wrong blob.
final class FillReader: @unchecked Sendable {
    // Owned by the one request task that reads through it.
    private let fill: BlobFill
    private let blobPath: String
    private let allocator: ByteBufferAllocator
    private var generation: Int?
    private var ownDescriptor: Int32 = -1

    init(fill: BlobFill, blobPath: String, allocator: ByteBufferAllocator) {
        self.fill = fill
        self.blobPath = blobPath
        self.allocator = allocator
    }

    deinit { if ownDescriptor >= 0 { close(ownDescriptor) } }

    func read(offset: Int64, length: Int) async throws -> ByteBuffer {
        let size = fill.descriptor.size
        while true {
            let snapshot = fill.snapshot
            if generation == nil { generation = snapshot.generation }
            guard snapshot.generation == generation else { throw BlobReadError.fillRestarted }
            var readable: Int64
            switch snapshot.outcome {
            case .failed(let reason)?: throw BlobReadError.fillFailed(reason)
            case .committed?: readable = size
            case nil: readable = snapshot.verified ? size : min(snapshot.available, size - 1)
            }
            if offset < readable {
                let fd = try descriptor()
                let count = Int(min(Int64(length), readable - offset))
                let buffer = try preadBuffer(fd, offset: offset, length: count, allocator: allocator)
                // The partial file may lag what the fill reported only if it was truncated under us.
                guard buffer.readableBytes > 0 else { throw BlobReadError.fillRestarted }
                return buffer
            }
            // The final byte waits for verification: ask for more than the blob has, so only that (or the end of the
            // fill) wakes us.
            _ = try await fill.wait(beyond: offset + 1 >= size ? size : offset, generation: generation!)
        }
    }

    private func descriptor() throws -> Int32 {
        let shared = fill.readDescriptor
        if shared >= 0 { return shared }
        if ownDescriptor < 0 {
            // Another process fetched the blob (we waited on its lock): read the committed file.
            ownDescriptor = open(blobPath, O_RDONLY | O_CLOEXEC)
            guard ownDescriptor >= 0 else { throw BlobReadError.fillFailed("the blob vanished from the store") }
        }
        return ownDescriptor
    }
}
