/// A registry image reference with Docker's normalisation rules:
/// `ubuntu` → `docker.io/library/ubuntu:latest`, `localhost:5000/etl:v1`, `ghcr.io/org/app@sha256:…`.
public struct Reference: Sendable, Hashable, CustomStringConvertible {
    /// Registry host as users write it (`docker.io`, `localhost:5000`).
    public let registry: String
    /// Repository path (`library/ubuntu`).
    public let repository: String
    public let tag: String?
    public let digest: Digest?

    public static let dockerHub = "docker.io"

    /// Docker's bound on a name (`registry/repository`), so a reference Slipway prints is one it parses back.
    static let maximumNameLength = 255
    /// The longest reference that can be valid: a name, a tag of 128 and a sha512 digest.
    static let maximumLength = maximumNameLength + 1 + 128 + 1 + "sha512:".count + 128

    public init(registry: String, repository: String, tag: String? = nil, digest: Digest? = nil) throws {
        guard Self.isValidRegistry(registry) else {
            throw OCIError.invalidReference("\(registry)/\(repository)", reason: "registry '\(registry)' is not a host name, IPv4 or [IPv6] address with an optional :port")
        }
        try Self.validate(repository: repository, in: "\(registry)/\(repository)")
        guard registry.count + 1 + repository.count <= Self.maximumNameLength else {
            throw OCIError.invalidReference("\(registry)/\(repository)", reason: "name longer than \(Self.maximumNameLength) characters")
        }
        if let tag { try Self.validate(tag: tag, in: "\(registry)/\(repository):\(tag)") }
        self.registry = registry
        self.repository = repository
        self.tag = tag ?? (digest == nil ? "latest" : nil)
        self.digest = digest
    }

    /// Parses a reference as `docker pull` does; `docker://` is accepted as a prefix.
    public init(parsing input: String) throws {
        var text = Substring(input)
        if text.hasPrefix("docker://") { text = text.dropFirst("docker://".count) }
        guard !text.isEmpty else { throw OCIError.invalidReference(input, reason: "empty") }
        guard text.count <= Self.maximumLength else {
            throw OCIError.invalidReference(input, reason: "longer than \(Self.maximumLength) characters")
        }

        var digest: Digest?
        if let at = text.firstIndex(of: "@") {
            do {
                digest = try Digest(String(text[text.index(after: at)...]))
            } catch {
                throw OCIError.invalidReference(input, reason: "bad digest after '@'")
            }
            text = text[..<at]
        }
        var tag: String?
        // A tag is after the last ':' that follows the last '/' (a ':' before it is a registry port).
        if let colon = text.lastIndex(of: ":"), text[colon...].firstIndex(of: "/") == nil {
            tag = String(text[text.index(after: colon)...])
            text = text[..<colon]
        }
        var components = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var registry = Self.dockerHub
        if components.count > 1, let first = components.first,
            first.contains(".") || first.contains(":") || first == "localhost" || first.lowercased() != first
        {
            registry = first
            components.removeFirst()
        }
        registry = Self.registryName(forHost: registry)
        if registry == Self.dockerHub && components.count == 1 { components.insert("library", at: 0) }
        try self.init(registry: registry, repository: components.joined(separator: "/"), tag: tag, digest: digest)
    }

    /// The name references use for a registry host: Docker Hub's API hosts are `docker.io`.
    public static func registryName(forHost host: String) -> String {
        host == "index.docker.io" || host == "registry-1.docker.io" ? dockerHub : host
    }

    /// Host to connect to: Docker Hub's API lives on `registry-1.docker.io`.
    public var apiHost: String { registry == Self.dockerHub ? "registry-1.docker.io" : registry }

    /// The tag or digest to ask the registry for; a digest wins over a tag.
    public var identifier: String { digest?.description ?? tag ?? "latest" }

    public var description: String {
        var text = "\(registry)/\(repository)"
        if let tag { text += ":\(tag)" }
        if let digest { text += "@\(digest)" }
        return text
    }

    private static func validate(repository: String, in input: String) throws {
        guard !repository.isEmpty, repository.count <= 255 else {
            throw OCIError.invalidReference(input, reason: "repository must be 1 to 255 characters")
        }
        for component in repository.split(separator: "/", omittingEmptySubsequences: false) {
            guard isValidPathComponent(component) else {
                throw OCIError.invalidReference(
                    input, reason: "repository component '\(component)' must be lowercase letters, digits and separators (. _ __ -)")
            }
        }
    }

    private static func validate(tag: String, in input: String) throws {
        let bytes = Array(tag.utf8)
        guard (1...128).contains(bytes.count), isWordCharacter(bytes[0]),
            bytes.allSatisfy({ isWordCharacter($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") })
        else { throw OCIError.invalidReference(input, reason: "tag '\(tag)' must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}") }
    }

    /// `host[:port]` as Docker's reference grammar has it: dot-separated labels of letters, digits and inner
    /// hyphens, or a bracketed IPv6 address; the port is 1 to 5 digits. The registry becomes part of URLs and of
    /// store paths, so nothing else gets through.
    static func isValidRegistry(_ registry: String) -> Bool {
        var host = Substring(registry)
        if let colon = host.lastIndex(of: ":"), !host[colon...].contains("]") {
            let port = host[host.index(after: colon)...]
            guard (1...5).contains(port.utf8.count), port.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return false }
            host = host[..<colon]
        }
        if host.hasPrefix("[") {
            let address = host.dropFirst().dropLast()
            return host.hasSuffix("]") && !address.isEmpty
                && address.utf8.allSatisfy { isHexDigit($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") }
        }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        return !host.isEmpty && labels.allSatisfy { label in
            let bytes = Array(label.utf8)
            func isAlnum(_ c: UInt8) -> Bool { (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) }
            guard let first = bytes.first, let last = bytes.last, isAlnum(first), isAlnum(last) else { return false }
            return bytes.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "-") }
        }
    }

    private static func isHexDigit(_ c: UInt8) -> Bool { (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102) }

    private static func isWordCharacter(_ c: UInt8) -> Bool {
        (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 95
    }

    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` without a regex engine.
    private static func isValidPathComponent(_ component: Substring) -> Bool {
        let bytes = Array(component.utf8)
        func isAlnum(_ c: UInt8) -> Bool { (c >= 48 && c <= 57) || (c >= 97 && c <= 122) }
        guard let first = bytes.first, let last = bytes.last, isAlnum(first), isAlnum(last) else { return false }
        var index = 0
        while index < bytes.count {
            if isAlnum(bytes[index]) { index += 1; continue }
            var end = index
            while end < bytes.count, !isAlnum(bytes[end]) { end += 1 }
            let separator = String(decoding: bytes[index..<end], as: UTF8.self)
            guard separator == "." || separator == "_" || separator == "__" || separator.allSatisfy({ $0 == "-" }) else { return false }
            index = end
        }
        return true
    }
}

/// Where an image lives: a registry, or an OCI image layout directory (`oci:PATH[:TAG]`).
public enum ImageLocation: Sendable, Hashable, CustomStringConvertible {
    case registry(Reference)
    case layout(path: String, tag: String?)

    public init(parsing input: String) throws {
        if input.hasPrefix("oci:") {
            let rest = String(input.dropFirst(4))
            guard !rest.isEmpty else { throw OCIError.invalidReference(input, reason: "missing layout path after 'oci:'") }
            // Like skopeo's oci transport: the first ':' ends the path, so the name may itself contain ':'
            // (`oci:/store:localhost:5000/app:v1`).
            if let colon = rest.firstIndex(of: ":") {
                let tag = String(rest[rest.index(after: colon)...])
                guard colon > rest.startIndex else { throw OCIError.invalidReference(input, reason: "empty layout path before ':'") }
                self = .layout(path: String(rest[..<colon]), tag: tag.isEmpty ? nil : tag)
            } else {
                self = .layout(path: rest, tag: nil)
            }
        } else {
            self = .registry(try Reference(parsing: input))
        }
    }

    public var description: String {
        switch self {
        // A registry host named `oci` (`docker://oci:5000/app`) would otherwise print as a layout path.
        case .registry(let reference): return reference.registry.hasPrefix("oci:") ? "docker://\(reference)" : reference.description
        case .layout(let path, let tag): return "oci:\(path)" + (tag.map { ":\($0)" } ?? "")
        }
    }
}
