import Crypto
import Foundation

/// A username/password pair used for HTTP Basic authentication in tests.
public struct BasicCredentials: Sendable, Hashable {
    public var username: String
    public var password: String

    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    /// The value of an `Authorization` header carrying these credentials.
    public var authorizationHeader: String {
        "Basic " + Data("\(username):\(password)".utf8).base64EncodedString()
    }
}


/// "sha256:<hex>" of `data`, as used for OCI blob digests.
public func sha256Digest(_ data: some DataProtocol) -> String {
    "sha256:" + SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
}
