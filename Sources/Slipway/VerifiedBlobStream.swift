import AsyncHTTPClient
import Images
import NIOCore
import OCI
import Registry

/// A blob of one registry as the request body of an upload to another: fetched when the upload starts, hashed
/// as it passes, and failing (which aborts the upload) if its size or digest is wrong. Nothing is staged on disk.
struct VerifiedBlobStream: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let source: RemoteImageSource
    let descriptor: Descriptor
    let progress: ProgressHandler

    struct AsyncIterator: AsyncIteratorProtocol {
        let stream: VerifiedBlobStream
        var body: HTTPClientResponse.Body.AsyncIterator?
        var hasher: DigestHasher
        var count: Int64 = 0
        var finished = false

        mutating func next() async throws -> ByteBuffer? {
            guard !finished else { return nil }
            let descriptor = stream.descriptor
            if body == nil {
                body = try await stream.source.client.openBlob(repository: stream.source.reference.repository, descriptor: descriptor)
                    .makeAsyncIterator()
            }
            guard let buffer = try await body?.next() else {
                finished = true
                let actual = hasher.finalize()
                guard count == descriptor.size, actual == descriptor.digest else {
                    throw RegistryError.digestMismatch(expected: descriptor.digest, actual: actual, url: stream.source.name)
                }
                return nil
            }
            count += Int64(buffer.readableBytes)
            guard count <= descriptor.size else {
                throw RegistryError.sizeMismatch(expected: descriptor.size, actual: count, url: stream.source.name)
            }
            buffer.withUnsafeReadableBytes { hasher.update($0) }
            stream.progress(.blobProgress(descriptor.digest, bytes: count))
            return buffer
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(stream: self, hasher: DigestHasher(descriptor.digest.algorithm))
    }
}
