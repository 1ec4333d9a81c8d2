import Synchronization

/// How far one layer may expand when decompressed: its tar may be at most
/// `min(absolute, max(floor, ratio × compressed size))` bytes.
///
/// Without a bound a few megabytes of gzip or zstd holding a valid tar of zeros fill the disk (unpack, the layer
/// cache) or keep a conversion busy for hours. The defaults are meant never to stop a real image:
/// - `floor` (1 GiB): small layers are bounded only by this, so a layer of well-compressing text, logs or
///   sparse-looking data up to 1 GiB is always accepted whatever its ratio;
/// - `ratio` (100): gzip of real file trees lands between 2× and 10×, zstd -19 of text rarely beyond 30×; only
///   runs of one byte value (zeros) go past 100× in practice;
/// - `absolute` (128 GiB): above the largest layers seen in practice (CUDA and model images have single layers
///   of 10–30 GiB); it stops a large archive of zeros that the ratio alone would let through.
/// An incompressible 1 GiB layer (the benchmark's) expands to about 1 GiB, well inside both the floor and 100×.
public struct DecompressionLimit: Sendable, Equatable {
    public var absolute: Int64
    public var floor: Int64
    public var ratio: Int64

    public init(absolute: Int64 = 128 << 30, floor: Int64 = 1 << 30, ratio: Int64 = 100) {
        self.absolute = absolute
        self.floor = floor
        self.ratio = ratio
    }

    public static let standard = DecompressionLimit()

    /// Largest tar a layer of `compressedSize` bytes may decode to (saturating: huge inputs get `absolute`).
    public func maximumSize(forCompressedSize compressedSize: Int64) -> Int64 {
        let (scaled, overflow) = max(0, compressedSize).multipliedReportingOverflow(by: max(0, ratio))
        return min(absolute, max(floor, overflow ? .max : scaled))
    }

    private static let processWide = Mutex(DecompressionLimit.standard)

    /// The limit for every layer this process decodes unless a caller passes one (the CLI sets it from
    /// `--max-layer-size` / `--max-expansion`).
    public static var configured: DecompressionLimit {
        get { processWide.withLock { $0 } }
        set { processWide.withLock { $0 = newValue } }
    }
}

/// Counts what another decoder produces and fails once a layer decodes to more than its limit: every consumer
/// (extraction, conversion, diffID computation) reads through `makeDecoder`, so none can be made to write or
/// hash an unbounded stream.
final class SizeLimitedDecoder: StreamDecoder {
    private let inner: StreamDecoder
    private let input: InputReader
    private let limit: DecompressionLimit
    private let layer: String
    private var produced: Int64 = 0

    init(_ inner: StreamDecoder, input: InputReader, limit: DecompressionLimit, layer: String) {
        self.inner = inner
        self.input = input
        self.limit = limit
        self.layer = layer
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = try inner.read(into: buffer)
        produced += Int64(n)
        // A streamed blob of unknown size is judged by the compressed bytes read so far, which only grows.
        let compressedSize = input.totalSize ?? input.bytesRead
        let maximum = limit.maximumSize(forCompressedSize: compressedSize)
        if produced > maximum {
            throw ArchiveError(.layerTooLarge(layer: layer, limit: maximum, compressedSize: compressedSize))
        }
        return n
    }
}
