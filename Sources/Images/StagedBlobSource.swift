import Blocking
import Foundation
import OCI
import Registry

/// Blobs a conversion wrote to local files, offered to an `ImageDestination` like blobs of any other source.
package struct StagedBlobSource: ImageSource {
    let files: [Digest: String]

    package init(files: [Digest: String]) { self.files = files }

    package var name: String { "converted layers" }

    package func rootDocument() async throws -> FetchedManifest {
        throw OCIError.malformedDocument(mediaType: "", reason: "staged blobs have no manifest")
    }

    package func document(_ descriptor: Descriptor) async throws -> [UInt8] {
        guard let path = files[descriptor.digest] else { throw BlobSinkError("\(descriptor.digest) is not staged") }
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    package func fetchBlob(_ descriptor: Descriptor, into sink: any BlobSink) async throws {
        guard let path = files[descriptor.digest] else { throw BlobSinkError("\(descriptor.digest) is not staged") }
        try await copyFile(at: path, from: sink.count, into: sink)
    }

    package func localBlobPath(_ descriptor: Descriptor) -> String? { files[descriptor.digest] }

    package func readRange(_ descriptor: Descriptor, offset: Int64, length: Int) async throws -> [UInt8] {
        guard let path = files[descriptor.digest] else { throw BlobSinkError("\(descriptor.digest) is not staged") }
        return try readFileRange(at: path, offset: offset, length: length)
    }
}

/// Appends the file at `path`, from byte `offset` on, to `sink`: the whole copy runs on a thread of its own, reads
/// and appends (which may block, on a slow reader of the sink) alike.
package func copyFile(at path: String, from offset: Int64, into sink: any BlobSink) async throws {
    try await runBlocking {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw BlobSinkError("cannot open \(path)") }
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(offset))
        while let data = try handle.read(upToCount: 1 << 20), !data.isEmpty {
            try data.withUnsafeBytes { try sink.append($0) }
        }
    }
}

/// Exactly `length` bytes of the file at `path` from `offset`.
package func readFileRange(at path: String, offset: Int64, length: Int) throws -> [UInt8] {
    guard let handle = FileHandle(forReadingAtPath: path) else { throw BlobSinkError("cannot open \(path)") }
    defer { try? handle.close() }
    try handle.seek(toOffset: UInt64(offset))
    let bytes = [UInt8](try handle.read(upToCount: length) ?? Data())
    guard bytes.count == length else { throw BlobSinkError("\(path) is shorter than \(offset + Int64(length)) bytes") }
    return bytes
}
