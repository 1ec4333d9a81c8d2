import Foundation
import OCI
import Testing
import TestSupport

@testable import Slipway

/// The name a pulled image gets in the store is its full reference, which skopeo's `oci:STORE:NAME` reads back.
@Suite(.tags(.unit)) struct StoreNameTests {
    @Test func registryImagesAreNamedByTheirFullReference() throws {
        #expect(Puller.storeName(for: try ImageLocation(parsing: "alpine:3.20")) == "docker.io/library/alpine:3.20")
        #expect(Puller.storeName(for: try ImageLocation(parsing: "localhost:5000/team/app:v1")) == "localhost:5000/team/app:v1")
        let digest = Digest.sha256(of: Array("manifest".utf8))
        #expect(Puller.storeName(for: try ImageLocation(parsing: "localhost:5000/app@\(digest)")) == "localhost:5000/app@\(digest)")
    }

    @Test func layoutImagesAreNamedByTheirLayoutAndNameIfAny() throws {
        #expect(Puller.storeName(for: try ImageLocation(parsing: "oci:/srv/images:etl")) == "oci:/srv/images:etl")
        #expect(Puller.storeName(for: try ImageLocation(parsing: "oci:/srv/images")) == "oci:/srv/images")
    }

    @Test func layoutImagesAreNamedByPathAndName() throws {
        #expect(Puller.storeName(for: try ImageLocation(parsing: "oci:/images/layout:app:v2")) == "oci:/images/layout:app:v2")
        // Two layouts with images of the same name stay apart in the store.
        #expect(
            Puller.storeName(for: .layout(path: "/a", tag: "app")) != Puller.storeName(for: .layout(path: "/b", tag: "app")))
    }
}

/// `--prioritize` lists: one path per line, or ctr-remote's `{"path": ..., "layerIndex": ...}` records.
@Suite(.tags(.unit)) struct PrioritizedFilesParsingTests {
    @Test func plainPathsAreOfferedToEveryLayer() throws {
        let list = try PrioritizedFiles(parsing: "/bin/sh\r\n\n   \netc/hosts\n/usr/lib/with space\n")
        #expect(list.entries.map(\.path) == ["/bin/sh", "etc/hosts", "/usr/lib/with space"])
        #expect(list.entries.allSatisfy { $0.layerIndex == nil })
        #expect(list.paths(forLayer: 0) == list.paths(forLayer: 7))
        #expect(!list.isEmpty)
        #expect(try PrioritizedFiles(parsing: "\n\n").isEmpty)
    }

    /// Regression: "\r\n" is a single Character in Swift, so splitting on "\n" left a Windows list as one entry.
    @Test func windowsLineEndingsEndLines() throws {
        let list = try PrioritizedFiles(parsing: "/a\r\n{\"path\":\"/b\",\"layerIndex\":1}\r\n\r\n/c\r\n")
        #expect(list.entries == [.init(path: "/a", layerIndex: nil), .init(path: "/b", layerIndex: 1), .init(path: "/c", layerIndex: nil)])
        #expect {
            try PrioritizedFiles(parsing: "/a\r\n\r\n{bad\r\n", source: "list")
        } throws: { error in
            "\(error)".hasPrefix("list:3:")
        }
    }

    @Test func recordsLimitAPathToItsLayer() throws {
        let text = """
            {"path":"/bin/sh","layerIndex":0}
            {"path":"/app/main","layerIndex":2,"manifestDigest":"sha256:ignored"}
            /etc/passwd
            {"path":"/everywhere"}
            """
        let list = try PrioritizedFiles(parsing: text)
        #expect(list.paths(forLayer: 0) == ["/bin/sh", "/etc/passwd", "/everywhere"])
        #expect(list.paths(forLayer: 1) == ["/etc/passwd", "/everywhere"])
        #expect(list.paths(forLayer: 2) == ["/app/main", "/etc/passwd", "/everywhere"])
    }

    @Test(arguments: [
        (#"{"layerIndex":1}"#, 2),
        (#"{"path":"/x","layerIndex":"one"}"#, 2),
        (#"{"path": "/x""#, 2),
    ])
    func malformedRecordIsRefusedWithItsLine(_ bad: String, _ line: Int) throws {
        #expect {
            try PrioritizedFiles(parsing: "/ok\n\(bad)\n/ok/too", source: "record.jsonl")
        } throws: { error in
            guard case ConvertError.malformedListLine(let source, let number) = error else { return false }
            return source == "record.jsonl" && number == line
                && "\(error)" == "record.jsonl:\(line): expected a path or a {\"path\": ...} record"
        }
    }

    @Test func listIsReadFromAFile() throws {
        let directory = try ScratchDirectory()
        let path = directory.sub("list.txt")
        try "/a\n{\"path\":\"/b\",\"layerIndex\":1}\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try PrioritizedFiles(contentsOf: path).paths(forLayer: 1) == ["/a", "/b"])
        #expect {
            try PrioritizedFiles(contentsOf: directory.sub("absent"))
        } throws: { error in
            guard case ConvertError.unreadableList(let named) = error else { return false }
            return named == directory.sub("absent") && "\(error)".contains("cannot read")
        }
    }
}

/// The converted image's config is the original with new diffIDs: fields Slipway does not model survive.
@Suite(.tags(.unit)) struct RewriteConfigTests {
    @Test func unknownFieldsAreKeptAndDiffIDsReplaced() throws {
        let original = """
            {"architecture":"amd64","os":"linux","os.features":["x"],"config":{"Env":["A=1"],"Healthcheck":{"Test":["CMD","true"]}},
             "rootfs":{"type":"layers","diff_ids":["sha256:\(String(repeating: "0", count: 64))"]},
             "history":[{"created_by":"step"}],"vendor.extension":{"nested":[1,2,3]}}
            """
        let diffIDs = [Digest.sha256(of: Array("one".utf8)), Digest.sha256(of: Array("two".utf8))]
        let rewritten = try jsonObject(try EStargzConverter.rewriteConfig(Array(original.utf8), diffIDs: diffIDs))
        let before = try jsonObject(Array(original.utf8))
        let rootfs = try #require(rewritten["rootfs"] as? [String: Any])
        #expect(rootfs["diff_ids"] as? [String] == diffIDs.map(\.description))
        #expect(rootfs["type"] as? String == "layers")
        for key in before.keys where key != "rootfs" {
            #expect(try canonical([key: rewritten[key] as Any]) == canonical([key: before[key]!]), "\(key)")
        }
        #expect(Set(rewritten.keys) == Set(before.keys))
    }

    private func canonical(_ object: [String: Any]) throws -> Data {
        try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    }

    @Test func configWithoutRootfsGetsOne() throws {
        let diffID = Digest.sha256(of: Array("layer".utf8))
        let rewritten = try jsonObject(try EStargzConverter.rewriteConfig(Array(#"{"architecture":"arm64","os":"linux"}"#.utf8), diffIDs: [diffID]))
        let rootfs = try #require(rewritten["rootfs"] as? [String: Any])
        #expect(rootfs["type"] as? String == "layers")
        #expect(rootfs["diff_ids"] as? [String] == [diffID.description])
    }

    @Test func configThatIsNotAnObjectIsRefused() {
        #expect(throws: OCIError.self) { try EStargzConverter.rewriteConfig(Array("[1,2]".utf8), diffIDs: []) }
    }
}
