import Archive
import CZlib
import EStargz
import Foundation
import OCI

/// A seekable index over one ordinary gzip layer (format version 1, docs/gzip-index.md): what the layer holds
/// and where to start inflating to read any of it, so a lazy mount reads an unconverted layer with Range requests.
///
/// - `entries` are eStargz TOC entries (same JSON keys), except that `offset` is where the entry's data starts in
///   the *uncompressed* tar stream. Files above `chunkSize` are split into `chunk` entries, each with its
///   `chunkDigest`; a smaller file's `chunkDigest` is its `digest`.
/// - `checkpoints` are zlib zran access points at deflate block boundaries, at least `spanSize` uncompressed bytes
///   apart. Checkpoint k's span is the compressed range from `in` (one byte earlier when `bits` is not 0) to the
///   next checkpoint's `in`, or to the end of the blob for the last one; `spanDigest` is the sha256 of those bytes.
public struct GzipIndex: Codable, Sendable, Equatable {
    public static let version1 = 1
    /// `artifactType` of the referrer manifest that carries an image's layer indexes.
    public static let artifactType = "application/vnd.slipway.gzip-index.v1"
    /// Media type of one layer's index blob: this structure as JSON, gzip-compressed.
    public static let layerMediaType = "application/vnd.slipway.gzip-index.layer.v1.json+gzip"
    /// Annotation on each index blob's descriptor in the artifact: the digest of the layer it describes.
    public static let layerAnnotation = "dev.slipway.gzip-index.layer"
    /// Size of a deflate window: what a checkpoint keeps of the output before it.
    public static let windowSize = 32 << 10
    /// Bytes of a file read and verified as one piece: files above it get several chunk entries.
    public static let defaultChunkSize: Int64 = 4 << 20
    public static let defaultSpanSize: Int64 = 4 << 20
    /// Bounds a reader holds an index to, whoever built it: the memory one read takes and one index's size.
    public static let maxSpanUncompressed: Int64 = 32 << 20
    public static let maxChunkSize: Int64 = 16 << 20
    public static let maxEncodedSize = 256 << 20

    public var version: Int
    /// The compressed layer this index describes.
    public var layer: Descriptor
    /// The sha256 of the uncompressed stream, which a full read checks.
    public var diffID: String
    public var uncompressedSize: Int64
    public var spanSize: Int64
    public var chunkSize: Int64
    public var checkpoints: [GzipCheckpoint]
    public var entries: [TOCEntry]

    public init(
        layer: Descriptor, diffID: Digest, uncompressedSize: Int64, spanSize: Int64, chunkSize: Int64,
        checkpoints: [GzipCheckpoint], entries: [TOCEntry]
    ) {
        version = Self.version1
        self.layer = layer
        self.diffID = diffID.description
        self.uncompressedSize = uncompressedSize
        self.spanSize = spanSize
        self.chunkSize = chunkSize
        self.checkpoints = checkpoints
        self.entries = entries
    }

    /// The blob pushed and stored: the JSON, gzip-compressed (the windows are base64 in JSON and compress well).
    public func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try zlibGzip(Array(encoder.encode(self)))
    }

    /// Decodes an index blob; refuses one that inflates past `maxEncodedSize` or is not this format's JSON. The
    /// claims inside are checked by `IndexedLayer`, against the layer they are used for.
    public static func decode(_ blob: [UInt8]) throws -> GzipIndex {
        let json: [UInt8]
        do {
            json = try gunzip(blob, limit: maxEncodedSize + 1)
        } catch {
            throw GzipIndexError.invalidIndex("the index blob is not gzip: \(error)")
        }
        guard json.count <= maxEncodedSize else {
            throw GzipIndexError.invalidIndex("the index inflates to more than \(maxEncodedSize) bytes")
        }
        return try decode(json: json)
    }

    /// Decodes the index's JSON (the blob, inflated).
    public static func decode(json: [UInt8]) throws -> GzipIndex {
        let index: GzipIndex
        do {
            index = try JSONDecoder().decode(GzipIndex.self, from: Data(json))
        } catch {
            throw GzipIndexError.invalidIndex("not a gzip index: \(error)")
        }
        guard index.version == version1 else {
            throw GzipIndexError.invalidIndex("format version \(index.version); this Slipway reads version \(version1)")
        }
        return index
    }
}

/// Where inflating can start: zlib zran's access point.
public struct GzipCheckpoint: Codable, Sendable, Equatable {
    /// Compressed offset of the first byte inflate reads from here.
    public var `in`: Int64
    /// Uncompressed offset of the first byte it produces.
    public var out: Int64
    /// Bits of the byte before `in` that belong to the first block (0 when the block starts on a byte).
    public var bits: Int
    /// The uncompressed bytes before `out`, up to `GzipIndex.windowSize` of them: the dictionary to inflate with.
    public var window: Data
    /// sha256 of this checkpoint's span of compressed bytes.
    public var spanDigest: String

    public init(in: Int64, out: Int64, bits: Int, window: Data, spanDigest: String) {
        self.in = `in`
        self.out = out
        self.bits = bits
        self.window = window
        self.spanDigest = spanDigest
    }

    /// The span's first compressed byte: `in`, or the byte before it that holds the first `bits` of the block.
    public var spanStart: Int64 { bits > 0 ? `in` - 1 : `in` }
}

public enum GzipIndexError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The index contradicts itself or the layer it is used for.
    case invalidIndex(String)
    /// The layer's bytes are not what the index says (a span digest, a chunk digest, a corrupt stream).
    case layerMismatch(String)
    /// The layer cannot be indexed (not gzip, corrupt, truncated).
    case unreadableLayer(String)

    public var description: String {
        switch self {
        case .invalidIndex(let why): "invalid gzip index: \(why)"
        case .layerMismatch(let why): "the layer does not match its gzip index: \(why)"
        case .unreadableLayer(let why): "cannot index the layer: \(why)"
        }
    }
}

/// gzip at zlib's best compression: an index is written once and fetched by every node, so its size counts more
/// than the time to compress it (ISA-L, which compresses layers, stops at a lower ratio).
func zlibGzip(_ input: [UInt8]) throws -> [UInt8] {
    var stream = z_stream()
    guard slipway_deflate_init2(&stream, 9, 31) == Z_OK else { throw GzipIndexError.invalidIndex("zlib would not compress") }
    defer { deflateEnd(&stream) }
    var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(input.count))) + 64)
    let rc = input.withUnsafeBufferPointer { source in
        output.withUnsafeMutableBufferPointer { target in
            stream.next_in = UnsafeMutablePointer(mutating: source.baseAddress)
            stream.avail_in = UInt32(source.count)
            stream.next_out = target.baseAddress
            stream.avail_out = UInt32(target.count)
            return deflate(&stream, Z_FINISH)
        }
    }
    guard rc == Z_STREAM_END else { throw GzipIndexError.invalidIndex("zlib could not compress the index (\(rc))") }
    return Array(output[..<Int(stream.total_out)])
}
