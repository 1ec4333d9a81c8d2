import AsyncHTTPClient
import Foundation
import NIOCore
import OCI

extension RegistryClient {
    /// Most bytes fetched by one multi-range request: they are held in memory.
    static let rangesLimit = 1 << 30

    /// Several byte ranges of a blob in one request (`Range: bytes=a-b,c-d`). The answer may be a
    /// `multipart/byteranges` 206, a single-range 206 covering them (ranges coalesced), or a 200 with the whole
    /// blob (Range ignored), which is read only up to the last range's end. A server that refuses multiple ranges
    /// (400, 416) gets one request per range. Returns the bytes of each range, in the order given; ranges must
    /// be non-empty and must not overlap.
    public func fetchRanges(repository: String, digest: Digest, ranges: [Range<Int64>]) async throws -> [[UInt8]] {
        guard ranges.count > 1 else {
            return try await ranges.asyncMap { try await fetchRange(repository: repository, digest: digest, offset: $0.lowerBound, length: $0.count) }
        }
        var request = Request(method: .GET, target: "/v2/\(repository)/blobs/\(digest)", scope: Self.scope(repository))
        request.headers.add(name: "Range", value: "bytes=" + ranges.map { "\($0.lowerBound)-\($0.upperBound - 1)" }.joined(separator: ","))
        request.timeout = .seconds(300)
        // Room for the bytes asked for twice over (a server may coalesce ranges) plus the parts' headers. The
        // ranges are the caller's, but may derive from a layer's numbers: the sum is checked.
        var requested = 0
        for range in ranges {
            let (sum, overflow) = requested.addingReportingOverflow(range.count)
            guard !overflow, sum <= Self.rangesLimit else { throw RegistryError.tooLarge(limit: Int64(Self.rangesLimit), url: resolve(request.target)) }
            requested = sum
        }
        let response: HTTPClientResponse
        do {
            response = try await send(request, expecting: [200, 206])
        } catch RegistryError.unexpectedStatus(let status, _, _, _) where status == 400 || status == 416 {
            return try await ranges.asyncMap { try await fetchRange(repository: repository, digest: digest, offset: $0.lowerBound, length: $0.count) }
        }
        let url = resolve(request.target)
        let end = ranges.map(\.upperBound).max()!
        let contentType = response.headers.first(name: "Content-Type") ?? ""
        if response.status == .ok {
            // The whole blob: keep what the ranges need, stop reading after the last one.
            var bytes: [UInt8] = []
            for try await buffer in response.body {
                bytes.append(contentsOf: buffer.readableBytesView.prefix(Int(end) - bytes.count))
                if bytes.count >= end { break }
            }
            guard bytes.count >= end else { throw RegistryError.sizeMismatch(expected: end, actual: Int64(bytes.count), url: url) }
            return ranges.map { Array(bytes[Int($0.lowerBound)..<Int($0.upperBound)]) }
        }
        let body = try await Self.collect(response.body, limit: requested * 2 + 64 * 1024 + ranges.count * 256, url: url)
        var parts: [(range: Range<Int64>, bytes: ArraySlice<UInt8>)]
        if let boundary = MultipartByteRanges.boundary(in: contentType) {
            parts = try MultipartByteRanges.parse(body, boundary: boundary, url: url)
        } else {
            guard let header = response.headers.first(name: "Content-Range"), let range = MultipartByteRanges.contentRange(header),
                range.count == body.count
            else { throw RegistryError.invalidResponse(url: url, reason: "206 without a usable Content-Range") }
            parts = [(range, body[...])]
        }
        return try ranges.map { wanted in
            guard let part = parts.first(where: { $0.range.lowerBound <= wanted.lowerBound && wanted.upperBound <= $0.range.upperBound }) else {
                throw RegistryError.invalidResponse(url: url, reason: "206 whose parts do not cover bytes \(wanted.lowerBound)-\(wanted.upperBound - 1)")
            }
            let from = part.bytes.startIndex + Int(wanted.lowerBound - part.range.lowerBound)
            return Array(part.bytes[from..<(from + wanted.count)])
        }
    }
}

/// The `multipart/byteranges` body of a 206 (RFC 9110 §14.6).
enum MultipartByteRanges {
    static func boundary(in contentType: String) -> String? {
        guard contentType.lowercased().hasPrefix("multipart/byteranges") else { return nil }
        for parameter in contentType.split(separator: ";").dropFirst() {
            let pair = parameter.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if pair.count == 2, pair[0].lowercased() == "boundary" { return pair[1].trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
        }
        return nil
    }

    /// "bytes a-b/size" (or "bytes a-b/*") → a..<b+1; nil unless a <= b and b is inside the announced size. The
    /// bounds are the server's: `b + 1` is computed only once b is known to be below the size, or below Int64.max.
    static func contentRange(_ header: String) -> Range<Int64>? {
        let value = header.trimmingCharacters(in: .whitespaces)
        guard value.hasPrefix("bytes ") else { return nil }
        let spanAndSize = value.dropFirst(6).split(separator: "/", omittingEmptySubsequences: false)
        guard spanAndSize.count == 2 else { return nil }
        let bounds = spanAndSize[0].split(separator: "-", omittingEmptySubsequences: false)
        guard bounds.count == 2, let start = HeaderValues.nonNegativeInteger(bounds[0]), let last = HeaderValues.nonNegativeInteger(bounds[1]),
            last >= start, last < Int64.max
        else { return nil }
        if spanAndSize[1] != "*" {
            guard let size = HeaderValues.nonNegativeInteger(spanAndSize[1]), last < size else { return nil }
        }
        return start..<(last + 1)
    }

    static func parse(_ body: [UInt8], boundary: String, url: String) throws -> [(range: Range<Int64>, bytes: ArraySlice<UInt8>)] {
        let delimiter = Array("--\(boundary)".utf8)
        let headerEnd = Array("\r\n\r\n".utf8)
        var parts: [(Range<Int64>, ArraySlice<UInt8>)] = []
        var position = 0
        func malformed(_ why: String) -> RegistryError {
            .invalidResponse(url: url, reason: "malformed multipart/byteranges body: \(why)")
        }
        while let start = find(delimiter, in: body, from: position) {
            var cursor = start + delimiter.count
            if body[cursor...].starts(with: Array("--".utf8)) { break }  // the closing delimiter
            guard let headersEnd = find(headerEnd, in: body, from: cursor) else { throw malformed("part without headers") }
            let headers = String(decoding: body[cursor..<headersEnd], as: UTF8.self)
            guard let line = headers.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("content-range:") }),
                let range = contentRange(String(line.dropFirst("content-range:".count)))
            else { throw malformed("part without Content-Range") }
            cursor = headersEnd + headerEnd.count
            guard range.count <= body.count - cursor else { throw malformed("part shorter than its Content-Range") }
            parts.append((range, body[cursor..<(cursor + Int(range.count))]))
            position = cursor + Int(range.count)
        }
        guard !parts.isEmpty else { throw malformed("no parts") }
        return parts
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard needle.count <= haystack.count - start else { return nil }
        var i = start
        while i <= haystack.count - needle.count {
            if haystack[i] == needle[0], haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        result.reserveCapacity(count)
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
