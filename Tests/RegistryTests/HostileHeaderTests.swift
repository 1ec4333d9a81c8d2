import Testing
import TestSupport
@testable import Registry

/// Numbers and links in registry headers and token answers are the server's word: parsed strictly, never trusted
/// for arithmetic unchecked.
@Suite(.tags(.unit)) struct HostileHeaderTests {
    @Test(arguments: [
        ("bytes 0-9/10", 0..<10 as Range<Int64>?), ("bytes 5-5/*", 5..<6), ("bytes 0-9/100", 0..<10),
        // The bound Int64.max would overflow `last + 1`.
        ("bytes 0-9223372036854775807/9223372036854775807", nil), ("bytes 9223372036854775807-9223372036854775807/*", nil),
        ("bytes 0-9/5", nil),  // beyond the announced size
        ("bytes 9-0/10", nil), ("bytes -1-5/10", nil), ("bytes +1-5/10", nil), ("bytes 0-99999999999999999999/*", nil),
        ("bytes 0-9", nil), ("bytes 0-9/x", nil), ("items 0-9/10", nil),
    ] as [(String, Range<Int64>?)])
    func contentRange(header: String, expected: Range<Int64>?) {
        #expect(MultipartByteRanges.contentRange(header) == expected)
    }

    @Test func multipartPartLongerThanTheBodyIsMalformedNotAnOverflow() {
        let body = Array(
            "--b\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-9223372036854775806/9223372036854775807\r\n\r\n0123456789\r\n--b--\r\n"
                .utf8)
        #expect(throws: RegistryError.self) { try MultipartByteRanges.parse(body, boundary: "b", url: "u") }
    }

    @Test func wellFormedMultipartParses() throws {
        let body = Array("--b\r\nContent-Range: bytes 2-4/10\r\n\r\nabc\r\n--b\r\nContent-Range: bytes 7-8/10\r\n\r\nxy\r\n--b--\r\n".utf8)
        let parts = try MultipartByteRanges.parse(body, boundary: "b", url: "u")
        #expect(parts.map(\.range) == [2..<5, 7..<9])
        #expect(parts.map { Array($0.bytes) } == [Array("abc".utf8), Array("xy".utf8)])
    }

    @Test(arguments: [
        ("42", 42 as Int64?), ("0", 0), ("9223372036854775807", Int64.max), ("9223372036854775808", nil), ("-1", nil), ("+5", nil),
        (" 5", nil), ("", nil), ("1e3", nil),
    ] as [(String, Int64?)])
    func nonNegativeInteger(text: String, expected: Int64?) {
        #expect(HeaderValues.nonNegativeInteger(text) == expected)
    }

    @Test(arguments: [
        (#"</v2/a/tags/list?n=2&last=b>; rel="next""#, "/v2/a/tags/list?n=2&last=b" as String?),
        (#"<https://r.example/v2/a/tags/list?last=b>;rel=next"#, "https://r.example/v2/a/tags/list?last=b"),
        (#"</v2/a/tags/list?last=a>; rel="prev", </v2/a/tags/list?last=z>; rel="next""#, "/v2/a/tags/list?last=z"),
        ("</v2/a/tags/list?last=b>", "/v2/a/tags/list?last=b"),  // no rel: Docker's registry sends it so
        (#"</v2/a/tags/list?last=a>; rel="prev""#, nil),
        ("", nil),
    ] as [(String, String?)])
    func nextLink(header: String, expected: String?) throws {
        #expect(try HeaderValues.nextLink(in: header) == expected)
    }

    @Test(arguments: [">/v2/a/tags/list<", "<", "</v2/a/tags/list", "<>; rel=next", "/v2/a/tags/list; rel=next"])
    func malformedLinkHeadersThrow(header: String) {
        #expect(throws: HeaderValues.LinkError.self) { try HeaderValues.nextLink(in: header) }
    }

    @Test func tokenLifetimeIsBoundedAndFinite() throws {
        #expect(try RegistryClient.tokenLifetime(announced: nil, realm: "r") == 60)
        #expect(try RegistryClient.tokenLifetime(announced: 300, realm: "r") == 300)
        #expect(try RegistryClient.tokenLifetime(announced: 1e300, realm: "r") == RegistryClient.maximumTokenLifetime)
        #expect(try RegistryClient.tokenLifetime(announced: -1e300, realm: "r") == 1)
        #expect(throws: RegistryError.self) { try RegistryClient.tokenLifetime(announced: .infinity, realm: "r") }
        #expect(throws: RegistryError.self) { try RegistryClient.tokenLifetime(announced: .nan, realm: "r") }
    }

    @Test func aTokenStoredWithTheLongestLifetimeIsServed() async throws {
        let cache = AuthCache()
        await cache.storeToken("t", scope: "s", expiresIn: try RegistryClient.tokenLifetime(announced: 1e300, realm: "r"))
        #expect(await cache.header(for: "s", registry: "r") == "Bearer t")
    }

    @Test(arguments: [("30", 30 as Double?), ("0", 0), ("-5", nil), ("nan", nil), ("inf", nil), ("1e300", nil), ("", nil)] as [(String, Double?)])
    func retryAfterDeltaSeconds(value: String, expected: Double?) {
        #expect(RetryPolicy.parseRetryAfter(value) == expected)
    }
}
