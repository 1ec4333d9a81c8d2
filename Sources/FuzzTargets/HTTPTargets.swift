import CacheServer
import Registry

enum HTTPTargets {
    /// Blob sizes the server resolves a client's Range against: empty, tiny, typical, and a 1 TiB blob.
    private static let blobSizes: [Int64] = [0, 1, 1000, 1 << 40]

    /// A client's `Range` header as the cache server answers it.
    static func rangeRequest(_ input: [UInt8]) {
        let header = text(input)
        for size in blobSizes {
            guard case .partial(let ranges) = ResolvedByteRange(header: header, size: size) else { continue }
            precondition(!ranges.isEmpty && ranges.count <= ResolvedByteRange.maximumParts, "range-request: \(ranges.count) parts")
            var total: Int64 = 0
            for range in ranges {
                precondition(range.lowerBound >= 0 && range.upperBound <= size && !range.isEmpty,
                    "range-request: \(range) is not a non-empty range of a \(size)-byte blob")
                total += range.upperBound - range.lowerBound
            }
            precondition(total <= size, "range-request: \(total) bytes asked of a \(size)-byte blob served as parts")
        }
    }

    /// The boundary of the multipart bodies in the seed corpus.
    static let multipartBoundary = "3d6b6a416f9b5"

    /// A registry's `Content-Range` header, `multipart/byteranges` Content-Type and body.
    static func contentRange(_ input: [UInt8]) {
        let header = text(input)
        if let range = RegistryResponseParsing.contentRange(header) {
            precondition(!range.isEmpty && range.lowerBound >= 0, "content-range: '\(header)' parsed as \(range)")
        }
        _ = RegistryResponseParsing.multipartBoundary(header)
        guard let parts = try? RegistryResponseParsing.multipartParts(input, boundary: multipartBoundary) else { return }
        for part in parts {
            precondition(Int64(part.bytes.count) == part.range.upperBound - part.range.lowerBound,
                "content-range: a part of \(part.bytes.count) bytes for \(part.range)")
        }
    }

    /// A tag list's `Link` header.
    static func link(_ input: [UInt8]) {
        let header = text(input)
        if let target = RegistryResponseParsing.nextPageTarget(link: header) {
            precondition(header.contains("<\(target)>"), "link: '\(target)' is not between < and > in '\(header)'")
        }
    }

    /// A registry's `WWW-Authenticate` header.
    static func wwwAuthenticate(_ input: [UInt8]) {
        guard let challenge = RegistryResponseParsing.authChallenge(text(input)) else { return }
        precondition(!challenge.scheme.isEmpty, "www-authenticate: empty scheme")
        for key in challenge.parameters.keys {
            precondition(key == key.lowercased(), "www-authenticate: parameter name '\(key)' not lowercased")
        }
    }

    /// `~/.docker/config.json`, looked up for Docker Hub and a private registry.
    static func dockerConfig(_ input: [UInt8]) {
        for registry in ["docker.io", "registry.example.com:5000"] {
            _ = try? DockerConfigCredentials.storedCredentials(inConfigFile: input, for: registry)
        }
    }
}
