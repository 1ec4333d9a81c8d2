/// A `Range` header resolved against a blob's size (RFC 9110 §14): what to send back.
enum ByteRangeRequest: Equatable, Sendable {
    /// No usable Range: the whole blob with 200. Also the answer to a unit other than `bytes`, and to ranges that
    /// together ask for more than the blob (serving those as parts would amplify the response, as Go's
    /// ServeContent reasons).
    case whole
    /// 206 with these ranges (half-open, in request order), one part or `multipart/byteranges`.
    case partial([Range<Int64>])
    /// 416 with `Content-Range: bytes */size`.
    case unsatisfiable(reason: String)

    /// More parts than any lazy-pull client sends (stargz-snapshotter and Slipway coalesce to a handful); a long
    /// list of tiny ranges is a way to make the server do work, not a real read.
    static let maximumParts = 64

    init(header: String?, size: Int64) {
        guard let header = header?.trimmingCharacters(in: .whitespaces), !header.isEmpty else {
            self = .whole
            return
        }
        guard header.lowercased().hasPrefix("bytes=") else {
            self = .whole
            return
        }
        let specs = header.dropFirst("bytes=".count).split(separator: ",", omittingEmptySubsequences: false)
        guard specs.count <= Self.maximumParts else {
            self = .unsatisfiable(reason: "\(specs.count) ranges in one request; at most \(Self.maximumParts) are served")
            return
        }
        var ranges: [Range<Int64>] = []
        var total: Int64 = 0
        for rawSpec in specs {
            let spec = rawSpec.trimmingCharacters(in: .whitespaces)
            guard let dash = spec.firstIndex(of: "-") else {
                self = .unsatisfiable(reason: "malformed range '\(spec)'")
                return
            }
            let first = spec[..<dash]
            let last = spec[spec.index(after: dash)...]
            let range: Range<Int64>
            if first.isEmpty {
                // A suffix: the last N bytes.
                guard let length = Self.number(last), length > 0 else {
                    self = .unsatisfiable(reason: "malformed suffix range '\(spec)'")
                    return
                }
                range = max(0, size - length)..<size
            } else {
                guard let start = Self.number(first) else {
                    self = .unsatisfiable(reason: "malformed range '\(spec)'")
                    return
                }
                var end = size
                if !last.isEmpty {
                    guard let inclusiveEnd = Self.number(last), inclusiveEnd >= start else {
                        self = .unsatisfiable(reason: "malformed range '\(spec)'")
                        return
                    }
                    end = min(size, inclusiveEnd == Int64.max ? size : inclusiveEnd + 1)
                }
                guard start < size else { continue }
                range = start..<end
            }
            guard !range.isEmpty else { continue }
            ranges.append(range)
            // Each range is at most `size`, which a manifest may set near Int64.max: the sum can overflow.
            let (sum, overflow) = total.addingReportingOverflow(Int64(range.count))
            total = overflow ? Int64.max : sum
        }
        if ranges.isEmpty {
            self = .unsatisfiable(reason: "no range starts within the \(size)-byte blob")
        } else if total > size || total == Int64.max {
            self = .whole
        } else {
            self = .partial(ranges)
        }
    }

    /// A non-negative decimal of at most 18 digits (so it fits in Int64 without overflow checks later).
    private static func number(_ text: Substring) -> Int64? {
        guard !text.isEmpty, text.count <= 18, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return Int64(text)
    }
}
