/// What `ByteRangeRequest` resolved a `Range` header to, for the fuzz targets (Sources/FuzzTargets).
package enum ResolvedByteRange: Equatable, Sendable {
    case whole
    case partial([Range<Int64>])
    case unsatisfiable

    /// Resolves `header` against a blob of `size` bytes exactly as the server does for `GET /v2/…/blobs/…`.
    package init(header: String?, size: Int64) {
        switch ByteRangeRequest(header: header, size: size) {
        case .whole: self = .whole
        case .partial(let ranges): self = .partial(ranges)
        case .unsatisfiable: self = .unsatisfiable
        }
    }

    /// At most this many ranges come back in `.partial`.
    package static var maximumParts: Int { ByteRangeRequest.maximumParts }
}
