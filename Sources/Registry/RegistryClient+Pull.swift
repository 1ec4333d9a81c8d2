import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OCI

/// A manifest or index as served, with the descriptor that names it.
public struct FetchedManifest: Sendable {
    public var descriptor: Descriptor
    public var bytes: [UInt8]
    public var document: ManifestDocument

    public init(descriptor: Descriptor, bytes: [UInt8], document: ManifestDocument) {
        self.descriptor = descriptor
        self.bytes = bytes
        self.document = document
    }
}

extension RegistryClient {
    /// Largest manifest we accept (distribution's own limit is 4 MiB).
    static let manifestLimit = 4 << 20

    /// Fetches a manifest or index by tag or digest and verifies it: against the digest when asked by digest,
    /// against `Docker-Content-Digest` otherwise; and against `expectedSize` when an index or descriptor gave one.
    public func fetchManifest(repository: String, reference: String, expectedSize: Int64? = nil) async throws -> FetchedManifest {
        var request = Request(method: .GET, target: "/v2/\(repository)/manifests/\(reference)", scope: Self.scope(repository))
        request.headers.add(name: "Accept", value: MediaType.manifestAccept.joined(separator: ", "))
        request.timeout = .seconds(120)
        let response = try await send(request, expecting: [200])
        let url = resolve(request.target)
        let bytes = try await Self.collect(response.body, limit: Self.manifestLimit, url: url)
        let contentType = response.headers.first(name: "Content-Type")
        let document = try ManifestDocument.decode(bytes, contentType: contentType)
        let requested = try? Digest(reference)
        let announced = response.headers.first(name: "Docker-Content-Digest").flatMap { try? Digest($0) }
        let algorithm = requested?.algorithm ?? announced?.algorithm ?? .sha256
        var hasher = DigestHasher(algorithm)
        hasher.update(bytes)
        let actual = hasher.finalize()
        if let expected = requested ?? announced, expected != actual {
            throw RegistryError.digestMismatch(expected: expected, actual: actual, url: url)
        }
        if let expectedSize, Int64(bytes.count) != expectedSize {
            throw RegistryError.sizeMismatch(expected: expectedSize, actual: Int64(bytes.count), url: url)
        }
        let mediaType: String
        switch document {
        case .manifest(let manifest): mediaType = manifest.mediaType ?? MediaType.ociManifest
        case .index(let index): mediaType = index.mediaType ?? MediaType.ociIndex
        }
        return FetchedManifest(descriptor: Descriptor(mediaType: mediaType, digest: actual, size: Int64(bytes.count)), bytes: bytes, document: document)
    }

    /// Resolves a tag to a descriptor with HEAD (does not count against Docker Hub's pull limit).
    public func resolve(repository: String, reference: String) async throws -> Descriptor {
        var request = Request(method: .HEAD, target: "/v2/\(repository)/manifests/\(reference)", scope: Self.scope(repository))
        request.headers.add(name: "Accept", value: MediaType.manifestAccept.joined(separator: ", "))
        request.timeout = .seconds(60)
        let response = try await send(request, expecting: [200])
        guard let digestHeader = response.headers.first(name: "Docker-Content-Digest"), let digest = try? Digest(digestHeader) else {
            throw RegistryError.invalidResponse(url: resolve(request.target), reason: "no Docker-Content-Digest header")
        }
        let type = response.headers.first(name: "Content-Type").map(ManifestDocument.stripParameters) ?? MediaType.ociManifest
        var size: Int64 = 0
        if let length = response.headers.first(name: "Content-Length") {
            guard let valid = HeaderValues.nonNegativeInteger(length) else {
                throw RegistryError.invalidResponse(url: resolve(request.target), reason: "Content-Length '\(length.prefix(40))' is not a size")
            }
            size = valid
        }
        return Descriptor(mediaType: type, digest: digest, size: size)
    }

    /// A blob's size (HEAD), or nil when the registry does not have it. A `Docker-Content-Digest` that names another
    /// blob is an error: the size would belong to it.
    public func blobDescriptor(repository: String, digest: Digest) async throws -> Descriptor? {
        var request = Request(method: .HEAD, target: "/v2/\(repository)/blobs/\(digest)", scope: Self.scope(repository))
        request.timeout = .seconds(60)
        let response = try await send(request, expecting: [200, 404])
        guard response.status == .ok else { return nil }
        let url = resolve(request.target)
        if let announced = response.headers.first(name: "Docker-Content-Digest"), announced != digest.description {
            throw RegistryError.invalidResponse(url: url, reason: "HEAD answered for \(announced)")
        }
        guard let length = response.headers.first(name: "Content-Length").flatMap(HeaderValues.nonNegativeInteger) else {
            throw RegistryError.invalidResponse(url: url, reason: "HEAD without a valid Content-Length")
        }
        return Descriptor(mediaType: "application/octet-stream", digest: digest, size: length)
    }

    /// Fetches a small blob (a config) into memory, verified.
    public func fetchSmallBlob(repository: String, descriptor: Descriptor, limit: Int = 64 << 20) async throws -> [UInt8] {
        guard descriptor.size <= limit else { throw RegistryError.tooLarge(limit: Int64(limit), url: "\(repository)@\(descriptor.digest)") }
        let sink = MemoryBlobSink()
        try await fetchBlob(repository: repository, descriptor: descriptor, into: sink)
        return sink.bytes
    }

    /// Streams a blob into `sink`, hashing as bytes arrive. An interrupted transfer resumes with a Range request
    /// from what the sink already holds; a 200 answer to that restarts from zero. Bytes beyond the declared size,
    /// or a final digest that does not match, make the sink discard everything, and the transfer is retried.
    public func fetchBlob(repository: String, descriptor: Descriptor, into sink: any BlobSink) async throws {
        let target = "/v2/\(repository)/blobs/\(descriptor.digest)"
        await resolveScheme()
        let url = resolve(target)
        var attempt = 0
        var lastFailure = ""
        var heldBefore = sink.count
        var rounds = 0
        while attempt < retry.maxAttempts, rounds < 100 {
            // An attempt that moved the download forward by at least 1 MiB does not use up the budget: a proxy
            // that cuts every connection after 500 MB must not fail a 5 GB layer. `rounds` bounds the whole.
            if rounds > 0, sink.count >= heldBefore + (1 << 20) { attempt -= 1 }
            heldBefore = sink.count
            rounds += 1
            attempt += 1
            if attempt > 1 {
                try await Task.sleep(for: .seconds(retry.delay(afterAttempt: attempt - 1, retryAfter: nil)))
            }
            let start = sink.count
            if start < descriptor.size {
                var request = Request(method: .GET, target: target, scope: Self.scope(repository))
                if start > 0 { request.headers.add(name: "Range", value: "bytes=\(start)-") }
                let response: HTTPClientResponse
                do {
                    response = try await send(request, expecting: start > 0 ? [200, 206] : [200])
                } catch let error as RegistryError where error.isTransient {
                    lastFailure = error.description
                    continue
                }
                if response.status == .partialContent {
                    guard let range = response.headers.first(name: "Content-Range"), range.hasPrefix("bytes \(start)-") else {
                        try sink.reset()
                        lastFailure = "unexpected Content-Range for resume at \(start)"
                        continue
                    }
                    logger.info("resuming \(descriptor.digest.short) at byte \(start)")
                } else if start > 0 {
                    try sink.reset()
                }
                do {
                    for try await buffer in response.body {
                        guard sink.count + Int64(buffer.readableBytes) <= descriptor.size else {
                            try sink.reset()
                            throw RegistryError.sizeMismatch(expected: descriptor.size, actual: sink.count + Int64(buffer.readableBytes), url: url)
                        }
                        try await sink.waitForRoom()
                        try buffer.withUnsafeReadableBytes { try sink.append($0) }
                    }
                } catch let error as RegistryError {
                    lastFailure = error.description
                    continue
                } catch is CancellationError {
                    throw CancellationError()
                } catch let error as BlobSinkError {
                    throw error
                } catch {
                    lastFailure = "connection lost after \(sink.count) of \(descriptor.size) bytes: \(error)"
                    logger.info("\(descriptor.digest.short): \(lastFailure); will resume")
                    continue
                }
                guard sink.count == descriptor.size else {
                    lastFailure = "body ended after \(sink.count) of \(descriptor.size) bytes"
                    logger.info("\(descriptor.digest.short): \(lastFailure); will resume")
                    continue
                }
            }
            let actual = sink.digest(descriptor.digest.algorithm)
            if actual == descriptor.digest { return }
            try sink.reset()
            lastFailure = RegistryError.digestMismatch(expected: descriptor.digest, actual: actual, url: url).description
            logger.warning("\(lastFailure)")
        }
        throw RegistryError.retriesExhausted(attempts: attempt, last: lastFailure)
    }

    /// Opens a blob for streaming as it is served. The caller verifies what it reads (see `VerifiedBlobStream`).
    public func openBlob(repository: String, descriptor: Descriptor) async throws -> HTTPClientResponse.Body {
        let response = try await send(Request(method: .GET, target: "/v2/\(repository)/blobs/\(descriptor.digest)", scope: Self.scope(repository)), expecting: [200])
        return response.body
    }

    /// `length` bytes of a blob from `offset`, with a Range request. A registry that ignores Range (200) is read
    /// only as far as needed. The caller verifies the bytes (eStargz TOC and chunk digests).
    public func fetchRange(repository: String, digest: Digest, offset: Int64, length: Int) async throws -> [UInt8] {
        var request = Request(method: .GET, target: "/v2/\(repository)/blobs/\(digest)", scope: Self.scope(repository))
        request.headers.add(name: "Range", value: "bytes=\(offset)-\(offset + Int64(length) - 1)")
        request.timeout = .seconds(300)
        let response = try await send(request, expecting: [200, 206])
        var skip = response.status == .partialContent ? 0 : offset
        var bytes: [UInt8] = []
        // The length may come from a hostile layer's numbers: memory grows with what actually arrives.
        bytes.reserveCapacity(min(length, 1 << 20))
        for try await buffer in response.body {
            var view = buffer.readableBytesView[...]
            if skip > 0 {
                let dropped = min(Int64(view.count), skip)
                view = view.dropFirst(Int(dropped))
                skip -= dropped
            }
            bytes.append(contentsOf: view.prefix(length - bytes.count))
            if bytes.count == length { break }
        }
        guard bytes.count == length else {
            throw RegistryError.sizeMismatch(expected: Int64(length), actual: Int64(bytes.count), url: resolve(request.target))
        }
        return bytes
    }

    /// Most pages of a tag list followed: a million tags at 1000 a page.
    static let maximumTagPages = 1000
    /// Most bytes of tag-list pages read in all: the list is held in memory.
    static let tagListByteLimit = 64 << 20

    /// Tags of a repository, following pagination. A registry decides where `Link` leads, so the walk is bounded:
    /// only to pages of the same origin, never twice to the same page, at most `maximumTagPages` pages and
    /// `tagListByteLimit` bytes; and it stops when the task is cancelled (the client that asked went away).
    public func listTags(repository: String) async throws -> [String] {
        var tags: [String] = []
        var target = "/v2/\(repository)/tags/list?n=1000"
        var visited: Set<String> = []
        var bytesLeft = Self.tagListByteLimit
        while true {
            try Task.checkCancellation()
            let url = resolve(target)
            guard visited.insert(url).inserted else {
                throw RegistryError.invalidResponse(url: url, reason: "tag list pagination leads back to a page already read")
            }
            guard visited.count <= Self.maximumTagPages else {
                throw RegistryError.invalidResponse(url: url, reason: "tag list has more than \(Self.maximumTagPages) pages")
            }
            let response = try await send(Request(method: .GET, target: target, scope: Self.scope(repository)), expecting: [200])
            let bytes = try await Self.collect(response.body, limit: bytesLeft, url: url)
            bytesLeft -= bytes.count
            struct TagList: Decodable { var tags: [String]? }
            guard let list = try? JSONDecoder().decode(TagList.self, from: Data(bytes)) else {
                throw RegistryError.invalidResponse(url: url, reason: "tag list is not JSON")
            }
            tags += list.tags ?? []
            guard let link = response.headers.first(name: "Link") else { return tags }
            let next: String?
            do {
                next = try HeaderValues.nextLink(in: link)
            } catch {
                throw RegistryError.invalidResponse(url: url, reason: "malformed Link header '\(link.prefix(200))'")
            }
            guard let next else { return tags }
            target = try pageTarget(next, from: url)
        }
    }

    /// A pagination link as a request target: a path on this registry, or an absolute URL of the same origin. A
    /// link elsewhere would have the registry choose which host (or socket) we talk to.
    func pageTarget(_ link: String, from url: String) throws -> String {
        if link.hasPrefix("/v2/") { return link }
        if link.hasPrefix("http://") || link.hasPrefix("https://"), Self.origin(of: link) == Self.origin(of: baseURL) { return link }
        throw RegistryError.invalidResponse(url: url, reason: "Link to '\(link.prefix(200))' leaves the registry's /v2/ API")
    }
}
