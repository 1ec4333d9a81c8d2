#if canImport(Glibc)
import Glibc
#endif

/// An OS/architecture pair with Go's naming (`linux/amd64`, `linux/arm64/v8`).
public struct Platform: Codable, Sendable, Hashable, CustomStringConvertible {
    public var architecture: String
    public var os: String
    public var variant: String?
    public var osVersion: String?
    public var osFeatures: [String]?

    enum CodingKeys: String, CodingKey {
        case architecture, os, variant
        case osVersion = "os.version"
        case osFeatures = "os.features"
    }

    public init(os: String, architecture: String, variant: String? = nil) {
        self.os = os
        self.architecture = architecture
        self.variant = variant
        normalize()
    }

    /// Parses `os/arch[/variant]`.
    public init(parsing text: String) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard (2...3).contains(parts.count), parts.allSatisfy({ !$0.isEmpty }) else { throw OCIError.invalidPlatform(text) }
        self.init(os: parts[0], architecture: parts[1], variant: parts.count == 3 ? parts[2] : nil)
    }

    private mutating func normalize() {
        switch architecture {
        case "x86_64", "x86-64": architecture = "amd64"
        case "aarch64":
            architecture = "arm64"
        case "armhf", "armv7l":
            architecture = "arm"
            variant = variant ?? "v7"
        case "i386", "i686": architecture = "386"
        default: break
        }
        if architecture == "arm64", variant == "v8" { variant = nil }
    }

    public var description: String { [os, architecture, variant].compactMap { $0 }.joined(separator: "/") }

    /// Whether an image for `self` runs where `wanted` is asked: os and architecture equal, and the variant equal
    /// when the caller names one.
    public func satisfies(_ wanted: Platform) -> Bool {
        os == wanted.os && architecture == wanted.architecture && (wanted.variant == nil || variant == wanted.variant)
    }

    /// The platform of this machine.
    public static var host: Platform {
        var name = utsname()
        uname(&name)
        let machine = withUnsafeBytes(of: &name.machine) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        return Platform(os: "linux", architecture: machine)
    }
}
