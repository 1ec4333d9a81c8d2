import AsyncHTTPClient
import Blocking
import Foundation
import NIOCore
import NIOHTTP1
import OCI

extension RegistryClient {
    /// Whether the registry already has a blob (HEAD), so a push can skip it.
    public func blobExists(repository: String, digest: Digest) async throws -> Bool {
        var request = Request(method: .HEAD, target: "/v2/\(repository)/blobs/\(digest)", scope: Self.scope(repository, push: true))
        request.timeout = .seconds(60)
        let response = try await send(request, expecting: [200, 404])
        return response.status == .ok
    }

    /// Asks the registry to link a blob from another repository on the same registry without uploading it.
    /// Returns false when the registry declined (it then opened an ordinary upload, which we abandon).
    public func mountBlob(repository: String, digest: Digest, from source: String) async throws -> Bool {
        let target = "/v2/\(repository)/blobs/uploads/?mount=\(digest)&from=\(source)"
        var request = Request(method: .POST, target: target, scope: "\(Self.scope(repository, push: true)) \(Self.scope(source))")
        request.headers.add(name: "Content-Length", value: "0")
        request.timeout = .seconds(60)
        let response = try await send(request, expecting: [201, 202])
        _ = try await Self.collect(response.body, limit: 64 * 1024)
        return response.status == .created
    }

    /// Uploads a blob from a file: one PUT when `chunkSize` is nil, else PATCH chunks of that size then a closing PUT.
    public func uploadBlob(repository: String, descriptor: Descriptor, fromFile path: String, chunkSize: Int64? = nil) async throws {
        guard let chunkSize, chunkSize > 0 else {
            let size = descriptor.size
            try await uploadBlob(repository: repository, descriptor: descriptor) {
                .stream(FileChunks(path: path, offset: 0, length: size), length: .known(size))
            }
            return
        }
        let scope = Self.scope(repository, push: true)
        var start = Request(method: .POST, target: "/v2/\(repository)/blobs/uploads/", scope: scope)
        start.headers.add(name: "Content-Length", value: "0")
        start.timeout = .seconds(60)
        let opened = try await send(start, expecting: [202])
        _ = try await Self.collect(opened.body, limit: 64 * 1024)
        var location = try uploadLocation(opened, of: start)

        var offset: Int64 = 0
        while offset < descriptor.size {
            let length = min(chunkSize, descriptor.size - offset)
            let chunkStart = offset
            var patch = Request(method: .PATCH, target: location, scope: scope)
            patch.headers.add(name: "Content-Type", value: "application/octet-stream")
            patch.headers.add(name: "Content-Range", value: "\(offset)-\(offset + length - 1)")
            patch.headers.add(name: "Content-Length", value: String(length))
            patch.body = { .stream(FileChunks(path: path, offset: chunkStart, length: length), length: .known(length)) }
            let answer = try await send(patch, expecting: [202])
            _ = try await Self.collect(answer.body, limit: 64 * 1024)
            location = try uploadLocation(answer, of: patch)
            offset += length
        }
        var close = Request(method: .PUT, target: Self.appending(digest: descriptor.digest, to: location), scope: scope)
        close.headers.add(name: "Content-Length", value: "0")
        let done = try await send(close, expecting: [201])
        _ = try await Self.collect(done.body, limit: 64 * 1024)
    }

    /// Uploads a blob from a stream in one PUT; `body` is called again for each attempt. The registry checks the
    /// digest before it accepts the blob.
    /// A failed PUT ends the upload session, so each attempt opens a new one, unless the blob turns out to be
    /// there after all.
    public func uploadBlob(repository: String, descriptor: Descriptor, streaming body: @escaping @Sendable () -> HTTPClientRequest.Body) async throws {
        let scope = Self.scope(repository, push: true)
        var attempt = 0
        while true {
            attempt += 1
            var start = Request(method: .POST, target: "/v2/\(repository)/blobs/uploads/", scope: scope)
            start.headers.add(name: "Content-Length", value: "0")
            start.timeout = .seconds(60)
            let opened = try await send(start, expecting: [202])
            _ = try await Self.collect(opened.body, limit: 64 * 1024)
            do {
                try await finishUpload(at: try uploadLocation(opened, of: start), descriptor: descriptor, scope: scope, body: body)
                return
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                // The PUT may have completed with only its answer lost (a read timeout on a slow registry, a
                // connection cut after the status line).
                if try await blobExists(repository: repository, digest: descriptor.digest) { return }
                let transient = (error as? RegistryError)?.isTransient ?? true
                guard transient, attempt < retry.maxAttempts else { throw error }
                logger.info("upload of \(descriptor.digest.short) failed (\(error)); starting a new upload")
                try await Task.sleep(for: .seconds(retry.delay(afterAttempt: attempt, retryAfter: nil)))
            }
        }
    }

    /// The PUT that ends an upload session; not resent, since a resent PUT finds the session gone.
    private func finishUpload(
        at location: String, descriptor: Descriptor, scope: String, body: @escaping @Sendable () -> HTTPClientRequest.Body
    ) async throws {
        var put = Request(method: .PUT, target: Self.appending(digest: descriptor.digest, to: location), scope: scope)
        put.retryable = false
        put.headers.add(name: "Content-Type", value: "application/octet-stream")
        put.headers.add(name: "Content-Length", value: String(descriptor.size))
        put.body = body
        let done = try await send(put, expecting: [201])
        _ = try await Self.collect(done.body, limit: 64 * 1024)
    }

    /// Uploads a small blob held in memory in one request.
    public func uploadBlob(repository: String, descriptor: Descriptor, bytes: [UInt8]) async throws {
        try await uploadBlob(repository: repository, descriptor: descriptor) { .bytes(ByteBuffer(bytes: bytes)) }
    }

    /// Stores a manifest or index under a tag or its digest.
    public func pushManifest(repository: String, reference: String, bytes: [UInt8], mediaType: String) async throws {
        var request = Request(method: .PUT, target: "/v2/\(repository)/manifests/\(reference)", scope: Self.scope(repository, push: true))
        request.headers.add(name: "Content-Type", value: mediaType)
        request.headers.add(name: "Content-Length", value: String(bytes.count))
        request.body = { .bytes(ByteBuffer(bytes: bytes)) }
        let response = try await send(request, expecting: [201])
        _ = try await Self.collect(response.body, limit: 64 * 1024)
    }

    private func uploadLocation(_ response: HTTPClientResponse, of request: Request) throws -> String {
        guard let location = response.headers.first(name: "Location"), !location.isEmpty else {
            throw RegistryError.invalidResponse(url: resolve(request.target), reason: "upload answer without Location")
        }
        if location.hasPrefix("http://") || location.hasPrefix("https://") { return location }
        return baseURL + (location.hasPrefix("/") ? location : "/" + location)
    }

    static func appending(digest: Digest, to location: String) -> String {
        location + (location.contains("?") ? "&" : "?") + "digest=\(digest)"
    }
}

/// A file region read in 1 MiB buffers, as a request body that can be replayed on retry. The file is read on a
/// thread of its own (see `ProducedElements`), a few buffers ahead of the upload.
struct FileChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let path: String
    let offset: Int64
    let length: Int64

    func makeAsyncIterator() -> ProducedElements<ByteBuffer>.Iterator {
        ProducedElements { [path, offset, length] yield in
            guard let handle = FileHandle(forReadingAtPath: path) else { throw BlobSinkError("cannot open \(path)") }
            defer { try? handle.close() }
            try handle.seek(toOffset: UInt64(offset))
            var remaining = length
            while remaining > 0 {
                let data = try handle.read(upToCount: Int(Swift.min(remaining, 1 << 20))) ?? Data()
                guard !data.isEmpty else { throw BlobSinkError("file shorter than its descriptor") }
                remaining -= Int64(data.count)
                try yield(ByteBuffer(bytes: data))
            }
        }.makeAsyncIterator()
    }
}
