import Foundation

/// Parsers for the numbers and links registries send in headers. Every value is the server's word: these accept
/// exactly the grammar and give nil (or throw) otherwise, so no caller does arithmetic on a number it did not check.
enum HeaderValues {
    /// A decimal of digits only (no sign, no spaces) that fits in Int64: Content-Length, Content-Range bounds.
    /// `Int64(_:)` alone would also take "+5" and "-1".
    static func nonNegativeInteger<Text: StringProtocol>(_ text: Text) -> Int64? {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        return Int64(text)
    }

    /// The target of the `rel="next"` link in a `Link` header (RFC 8288), as the tags and catalog APIs paginate:
    /// `</v2/a/tags/list?n=2&last=b>; rel="next"`. A link without `rel` counts as next, as Docker's registry sends
    /// it; nil when there is no next link.
    static func nextLink(in header: String) throws(LinkError) -> String? {
        var rest = Substring(header)
        while true {
            rest = rest.drop { $0 == " " || $0 == "," }
            if rest.isEmpty { return nil }
            guard rest.first == "<", let close = rest.firstIndex(of: ">") else { throw LinkError(header: header) }
            let target = rest[rest.index(after: rest.startIndex)..<close]
            rest = rest[rest.index(after: close)...]
            // The link's parameters run to the next link, which starts with "<" after a comma.
            let parametersEnd = rest.firstIndex(of: "<") ?? rest.endIndex
            let parameters = rest[..<parametersEnd]
            rest = rest[parametersEnd...]
            guard !target.isEmpty else { throw LinkError(header: header) }
            var relations: [Substring]? = nil
            for parameter in parameters.split(separator: ";") {
                let pair = parameter.split(separator: "=", maxSplits: 1)
                guard pair.count == 2, pair[0].trimmingCharacters(in: .whitespaces).lowercased() == "rel" else { continue }
                let value = pair[1].trimmingCharacters(in: .whitespaces.union(.init(charactersIn: "\",")))
                relations = value.lowercased().split(separator: " ")
            }
            if relations == nil || relations!.contains("next") { return String(target) }
        }
    }

    struct LinkError: Error {
        var header: String
    }
}
