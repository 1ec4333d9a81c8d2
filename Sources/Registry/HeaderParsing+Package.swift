/// The registry client's parsers of response headers and bodies, reachable from the fuzz targets
/// (Sources/FuzzTargets) without a server; each forwards to the code `RegistryClient` runs.
package enum RegistryResponseParsing {
    /// The first challenge of a `WWW-Authenticate` header: its scheme (lowercased for Basic/Bearer) and parameters.
    package static func authChallenge(_ header: String) -> (scheme: String, parameters: [String: String])? {
        guard let challenge = AuthChallenge(header: header) else { return nil }
        switch challenge.scheme {
        case .basic: return ("basic", challenge.parameters)
        case .bearer: return ("bearer", challenge.parameters)
        case .other(let name): return (name, challenge.parameters)
        }
    }

    /// A response's `Content-Range: bytes a-b/size` as a half-open range.
    package static func contentRange(_ header: String) -> Range<Int64>? { MultipartByteRanges.contentRange(header) }

    /// The boundary of a `multipart/byteranges` Content-Type.
    package static func multipartBoundary(_ contentType: String) -> String? { MultipartByteRanges.boundary(in: contentType) }

    /// The parts of a `multipart/byteranges` body.
    package static func multipartParts(_ body: [UInt8], boundary: String) throws -> [(range: Range<Int64>, bytes: ArraySlice<UInt8>)] {
        try MultipartByteRanges.parse(body, boundary: boundary, url: "fuzz")
    }

    /// The target of a tag list's `Link: <…>; rel="next"` header (nil for none or a malformed header).
    package static func nextPageTarget(link: String) -> String? { (try? HeaderValues.nextLink(in: link)) ?? nil }
}
