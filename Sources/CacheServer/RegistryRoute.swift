import OCI

/// A request path of the distribution read API, validated: names and tags by the spec's grammar, digests by
/// `Digest`, so nothing a client sends can reach the filesystem as a path.
enum RegistryRoute: Equatable, Sendable {
    case base
    case manifest(name: String, reference: ManifestReference)
    case blob(name: String, digest: Digest)
    case tags(name: String)
    /// OCI 1.1 Referrers API: the artifacts whose subject is the manifest `digest`.
    case referrers(name: String, digest: Digest)
    case metrics

    enum ManifestReference: Equatable, Sendable {
        case tag(String)
        case digest(Digest)
    }

    /// Why a path is not a route, with the spec's error code to answer.
    struct Rejection: Error, Equatable {
        var status: Int
        var code: String
        var message: String
    }

    /// The request target split into its path and decoded query.
    struct Target {
        var path: Substring
        var query: [String: String]

        init(_ uri: String) {
            let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
            path = parts[0]
            query = [:]
            guard parts.count == 2 else { return }
            for pair in parts[1].split(separator: "&") {
                let keyValue = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let key = String(keyValue[0])
                let value = keyValue.count == 2 ? Self.percentDecoded(keyValue[1]) : ""
                if query[key] == nil { query[key] = value }
            }
        }

        private static func percentDecoded(_ text: Substring) -> String {
            var bytes: [UInt8] = []
            var iterator = text.utf8.makeIterator()
            while let byte = iterator.next() {
                if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
                    let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
                {
                    bytes.append(value)
                } else if byte == UInt8(ascii: "+") {
                    bytes.append(UInt8(ascii: " "))
                } else {
                    bytes.append(byte)
                }
            }
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    init(path: Substring) throws(Rejection) {
        if path == "/metrics" {
            self = .metrics
            return
        }
        guard path == "/v2" || path.hasPrefix("/v2/") else {
            throw Rejection(status: 404, code: "NOT_FOUND", message: "not a registry API path; the API is under /v2/")
        }
        let rest = path.dropFirst("/v2".count).drop { $0 == "/" }
        if rest.isEmpty {
            self = .base
            return
        }
        let components = rest.split(separator: "/", omittingEmptySubsequences: false)
        guard components.count >= 3 else { throw Self.unknownPath(path) }
        let kind = components[components.count - 2]
        let last = components[components.count - 1]
        if kind == "tags", last == "list" {
            self = .tags(name: try Self.validName(components.dropLast(2)))
            return
        }
        let name = try Self.validName(components.dropLast(2))
        switch kind {
        case "manifests":
            if last.contains(":") {
                guard let digest = try? Digest(String(last)) else {
                    throw Rejection(status: 400, code: "DIGEST_INVALID", message: "'\(last.prefix(200))' is not a valid digest")
                }
                self = .manifest(name: name, reference: .digest(digest))
            } else {
                guard Self.isValidTag(last) else {
                    throw Rejection(status: 400, code: "MANIFEST_INVALID", message: "'\(last.prefix(200))' is not a valid tag")
                }
                self = .manifest(name: name, reference: .tag(String(last)))
            }
        case "blobs":
            guard let digest = try? Digest(String(last)) else {
                throw Rejection(status: 400, code: "DIGEST_INVALID", message: "'\(last.prefix(200))' is not a valid digest")
            }
            self = .blob(name: name, digest: digest)
        case "referrers":
            guard let digest = try? Digest(String(last)) else {
                throw Rejection(status: 400, code: "DIGEST_INVALID", message: "'\(last.prefix(200))' is not a valid digest")
            }
            self = .referrers(name: name, digest: digest)
        default:
            throw Self.unknownPath(path)
        }
    }

    private static func unknownPath(_ path: Substring) -> Rejection {
        Rejection(status: 404, code: "NOT_FOUND", message: "no such endpoint: \(path.prefix(200))")
    }

    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most 255 characters.
    static func validName<C: Collection<Substring>>(_ components: C) throws(Rejection) -> String {
        let name = components.joined(separator: "/")
        guard !components.isEmpty, name.utf8.count <= 255, components.allSatisfy(isValidNameComponent) else {
            throw Rejection(status: 400, code: "NAME_INVALID", message: "invalid repository name '\(name.prefix(255))'")
        }
        return name
    }

    private static func isValidNameComponent(_ component: Substring) -> Bool {
        func isAlphanumeric(_ byte: UInt8) -> Bool { (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x30 && byte <= 0x39) }
        let bytes = Array(component.utf8)
        guard let first = bytes.first, let last = bytes.last, isAlphanumeric(first), isAlphanumeric(last) else { return false }
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if isAlphanumeric(byte) {
                index += 1
                continue
            }
            // A separator: ".", "_", "__" or a run of "-", always between alphanumerics.
            var end = index + 1
            switch byte {
            case UInt8(ascii: "."): break
            case UInt8(ascii: "_"): if end < bytes.count, bytes[end] == UInt8(ascii: "_") { end += 1 }
            case UInt8(ascii: "-"): while end < bytes.count, bytes[end] == UInt8(ascii: "-") { end += 1 }
            default: return false
            }
            guard end < bytes.count, isAlphanumeric(bytes[end]) else { return false }
            index = end
        }
        return true
    }

    /// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
    static func isValidTag(_ tag: Substring) -> Bool {
        let bytes = Array(tag.utf8)
        func isWord(_ byte: UInt8) -> Bool {
            (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x30 && byte <= 0x39) || byte == UInt8(ascii: "_")
        }
        guard let first = bytes.first, bytes.count <= 128, isWord(first) else { return false }
        return bytes.dropFirst().allSatisfy { isWord($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }
}
