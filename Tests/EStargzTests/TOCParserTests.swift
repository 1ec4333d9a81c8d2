import Foundation
import Testing
import TestSupport

@testable import EStargz

/// The dedicated TOC parser reads what JSONDecoder reads.
@Suite(.tags(.unit)) struct TOCParserTests {
    @Test func agreesWithJSONDecoderOnWriterOutput() throws {
        let (tar, _) = try makeInputTar(chunk: 64 << 10)
        let (_, result) = try convert(tar, chunk: 64 << 10)
        let json = result.toc.jsonBytes()
        #expect(try TOCParser.parse(json) == (try JSONDecoder().decode(TOC.self, from: Data(json))))
        #expect(try TOCParser.parse(json) == result.toc)
    }

    @Test func escapesNullsAndUnknownMembers() throws {
        let json = #"""
            {"version": 1, "extra": {"a": [1, 2.5e3, true, false, null, {"b": "c"}]},
             "entries": [
              {"name": "dir/\u00e9t\u00e9 \ud83d\ude00\n\"q\"\\\/", "type": "reg", "size": 3, "mode": 420, "uid": null,
               "xattrs": {"user.k": "dj4m"}, "future": [{"x": -1}], "chunkDigest": "sha256:00"},
              {"name": "l", "type": "symlink", "linkName": "../t", "xattrs": null}
             ]}
            """#
        let toc = try TOCParser.parse(Array(json.utf8))
        #expect(toc == (try JSONDecoder().decode(TOC.self, from: Data(json.utf8))))
        #expect(toc.entries[0].name == "dir/été 😀\n\"q\"\\/")
        #expect(toc.entries[0].xattrs["user.k"] == Array("v>&".utf8))
        #expect(toc.entries[1].linkName == "../t")
    }

    @Test func rejectsWhatIsNotATOC() {
        for bad in [
            #"{"version": 1, "entries": [{"type": "reg"}]}"#,  // no name
            #"{"version": 1, "entries": [{"name": "a", "type": "reg", "size": 1.5}]}"#,
            #"{"version": 1, "entries": [{"name": "\ud800", "type": "reg"}]}"#,  // lone surrogate
            #"{"version": 1, "entries": []} trailing"#,
            #"{"version": 1, "entries": [{"name": "a", "type": "reg", "size": 99999999999999999999}]}"#,
            #"{"entries": []}"#,
            "{\"version\": 1, \"entries\": [{\"name\": \"a\u{1}\", \"type\": \"reg\"}]}",
            #"{"version": 1, "entries": [{"name": "a", "type": "reg", "xattrs": {"k": "%%"}}]}"#,
        ] {
            #expect(throws: EStargzError.self, "\(bad)") { _ = try TOCParser.parse(Array(bad.utf8)) }
        }
    }
}
