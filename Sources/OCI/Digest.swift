import Crypto

/// A content digest such as `sha256:2c26b46b…`. Only sha256 and sha512 are accepted, with their exact hex lengths,
/// so a digest that parses is always safe to use as a file name.
public struct Digest: Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    public enum Algorithm: String, Sendable, Codable {
        case sha256, sha512
        var hexLength: Int { self == .sha256 ? 64 : 128 }
    }

    public let algorithm: Algorithm
    public let hex: String

    public init(algorithm: Algorithm, hex: String) throws {
        guard hex.count == algorithm.hexLength, hex.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) })
        else { throw OCIError.invalidDigest("\(algorithm.rawValue):\(hex)") }
        self.algorithm = algorithm
        self.hex = hex
    }

    public init(_ string: String) throws {
        guard let colon = string.firstIndex(of: ":"), let algorithm = Algorithm(rawValue: String(string[..<colon])) else {
            throw OCIError.invalidDigest(string)
        }
        try self.init(algorithm: algorithm, hex: String(string[string.index(after: colon)...]))
    }

    public var description: String { "\(algorithm.rawValue):\(hex)" }
    /// The first 12 hex digits, as `docker images` shows them.
    public var short: String { String(hex.prefix(12)) }

    public static func < (lhs: Digest, rhs: Digest) -> Bool { lhs.description < rhs.description }

    public init(from decoder: any Decoder) throws {
        try self.init(try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    /// sha256 of `bytes`.
    public static func sha256<Bytes: Sequence>(of bytes: Bytes) -> Digest where Bytes.Element == UInt8 {
        var hasher = SHA256()
        hasher.update(data: Array(bytes))
        return Digest(sha256: hasher.finalize())
    }

    public init(sha256: SHA256.Digest) {
        self.algorithm = .sha256
        self.hex = sha256.map { hexDigits[Int($0 >> 4)] + hexDigits[Int($0 & 0xf)] }.joined()
    }

    public init(sha512: SHA512.Digest) {
        self.algorithm = .sha512
        self.hex = sha512.map { hexDigits[Int($0 >> 4)] + hexDigits[Int($0 & 0xf)] }.joined()
    }
}

private let hexDigits = (0..<16).map { String($0, radix: 16) }

/// Incremental hashing for a digest's algorithm, so verification follows whatever the descriptor names.
public struct DigestHasher {
    private enum State { case sha256(SHA256), sha512(SHA512) }
    private var state: State

    public init(_ algorithm: Digest.Algorithm = .sha256) {
        state = algorithm == .sha256 ? .sha256(SHA256()) : .sha512(SHA512())
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        switch state {
        case .sha256(var hasher):
            hasher.update(bufferPointer: bytes)
            state = .sha256(hasher)
        case .sha512(var hasher):
            hasher.update(bufferPointer: bytes)
            state = .sha512(hasher)
        }
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    public func finalize() -> Digest {
        switch state {
        case .sha256(let hasher): return Digest(sha256: hasher.finalize())
        case .sha512(let hasher): return Digest(sha512: hasher.finalize())
        }
    }
}
