import Archive
import Foundation
import OCI
import Testing
import TestSupport

@testable import EStargz

/// A layer tar with dirs, small files, an empty file, large files (chunked), a symlink, a hard link, xattrs.
func makeInputTar(chunk: Int) throws -> (tar: [UInt8], entries: [(TarHeader, [UInt8])]) {
    var entries: [(TarHeader, [UInt8])] = []
    let t = TarTimestamp(seconds: 1_700_000_000)
    entries.append((TarHeader(name: "etc/", type: .directory, mode: 0o755, mtime: t), []))
    entries.append(
        (TarHeader(name: "etc/hosts", type: .regular, mode: 0o644, uid: 1000, gid: 1000, uname: "user", gname: "grp", mtime: t),
         Array("127.0.0.1 localhost\n".utf8)))
    entries.append((TarHeader(name: "etc/empty", type: .regular, mode: 0o600, mtime: t), []))
    var big = [UInt8](repeating: 0, count: chunk * 3 + 1234)
    var x: UInt32 = 12345
    for i in big.indices {
        x = x &* 1_103_515_245 &+ 12345
        big[i] = UInt8(truncatingIfNeeded: x >> 16)
    }
    entries.append((TarHeader(name: "usr/", type: .directory, mode: 0o755, mtime: t), []))
    entries.append((TarHeader(name: "usr/big.bin", type: .regular, mode: 0o755, mtime: t,
                              xattrs: ["user.test": Array("v<&>".utf8)]), big))
    entries.append((TarHeader(name: "usr/exact.bin", type: .regular, mode: 0o644, mtime: t),
                    Array(big[0..<(chunk * 2)])))
    entries.append((TarHeader(name: "usr/link", type: .symbolicLink, mode: 0o777, mtime: t, linkName: "big.bin"), []))
    entries.append((TarHeader(name: "usr/hard", type: .hardLink, mode: 0o755, mtime: t, linkName: "usr/big.bin"), []))
    entries.append((TarHeader(name: "usr/small", type: .regular, mode: 0o644, uid: 1000, gid: 1000, uname: "user", gname: "grp",
                              mtime: TarTimestamp(seconds: 1_700_000_000, nanoseconds: 600_000_000)),
                    Array("hello\n".utf8)))
    var w = TarWriter()
    for (h, c) in entries { try w.write(h, contents: c) }
    try w.finish()
    return (w.bytes, entries)
}

func convert(_ tar: [UInt8], chunk: Int, prioritized: [String] = [], allowMissing: Bool = false) throws
    -> (blob: [UInt8], result: EStargzResult)
{
    var blob: [UInt8] = []
    let options = EStargzWriterOptions(chunkSize: chunk, prioritizedFiles: prioritized, allowMissingPrioritizedFiles: allowMissing)
    let writer = EStargzWriter(options: options) { blob += $0 }
    let result = try writer.convert(TarReader(bytes: tar))
    return (blob, result)
}

func temporaryFile(_ bytes: [UInt8], name: String) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("estargz-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let path = dir.appendingPathComponent(name).path
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
}

@Suite(.tags(.unit)) struct EStargzRoundTripTests {
    let chunk = 64 << 10

    @Test func footerLayout() throws {
        let f = estargzFooter(tocOffset: 0x1234)
        #expect(f.count == 51)
        #expect(Array(f[0..<16]) == [0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0, 0x53, 0x47, 22, 0])
        #expect(String(decoding: f[16..<38], as: UTF8.self) == "0000000000001234STARGZ")
        #expect(Array(f[38...]) == [1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0])
        #expect(try parseEStargzFooter(f) == 0x1234)
        var bad = f
        bad[33] = UInt8(ascii: "X")
        #expect(throws: EStargzError.self) { try parseEStargzFooter(bad) }
        // The footer is an empty gzip member.
        #expect(try gunzip(f).isEmpty)
    }

    @Test func modtimeFormat() {
        #expect(formatModtime(TarTimestamp(seconds: 0)) == "")
        #expect(formatModtime(TarTimestamp(seconds: 1_700_000_000)) == "2023-11-14T22:13:20Z")
        #expect(formatModtime(TarTimestamp(seconds: 1_700_000_000, nanoseconds: 600_000_000)) == "2023-11-14T22:13:21Z")
        #expect(formatModtime(TarTimestamp(seconds: 951_782_400)) == "2000-02-29T00:00:00Z")
    }

    @Test func roundTrip() throws {
        let (tar, input) = try makeInputTar(chunk: chunk)
        let (blob, result) = try convert(tar, chunk: chunk)
        #expect(result.blobSize == Int64(blob.count))
        #expect(result.blobDigest == Digest.sha256(of: blob))
        #expect(result.annotations[tocDigestAnnotation] == result.tocDigest.description)

        // The blob is plain multi-member tar+gzip; the diffID matches Archive's digester.
        let path = try temporaryFile(blob, name: "layer.tar.gz")
        let (diffID, size) = try LayerDigester.diffID(ofLayerAt: path, compression: .gzip)
        #expect(diffID == result.diffID.description)
        #expect(size == result.uncompressedSize)

        let plain = try gunzip(blob)
        #expect(Int64(plain.count) == result.uncompressedSize)
        let r = TarReader(bytes: plain)
        var got: [(TarHeader, [UInt8])] = []
        while let h = try r.next() { got.append((h, try r.readContents())) }
        #expect(got.count == input.count + 2)
        #expect(got.first?.0.name == noPrefetchLandmarkName)
        #expect(got.first?.1 == [0x0f])
        #expect(got.last?.0.name == estargzTOCName)
        for (i, (h, c)) in input.enumerated() {
            let (gh, gc) = got[i + 1]
            #expect(gh.name == h.name)
            #expect(gh.type == h.type)
            #expect(gh.mode == h.mode)
            #expect(gh.uid == h.uid && gh.gid == h.gid)
            #expect(gh.linkName == h.linkName)
            #expect(gh.xattrs == h.xattrs)
            #expect(gh.mtime == h.mtime)
            #expect(gc == c, "contents of \(h.name)")
        }
        // TOC JSON inside the tar is exactly what was digested.
        #expect(Digest.sha256(of: got.last!.1) == result.tocDigest)

        // Reader: footer, TOC, every chunk.
        let reader = try EStargzReader(blob: blob)
        try reader.verifyTOC(result.tocDigest)
        #expect(reader.tocOffset == result.tocOffset)
        #expect(reader.toc == result.toc)
        let bad = try Digest("sha256:" + String(repeating: "0", count: 64))
        #expect(throws: EStargzError.self) { try reader.verifyTOC(bad) }

        var chunkCount = 0
        for (h, c) in input where h.type == .regular && !c.isEmpty {
            var off: Int64 = 0
            var rebuilt: [UInt8] = []
            while off < Int64(c.count) {
                let ch = try #require(reader.chunk(for: h.name, at: off))
                #expect(ch.chunkOffset == off)
                #expect(ch.compressedRange.lowerBound < ch.compressedRange.upperBound)
                #expect(ch.nextOffset <= reader.tocOffset)
                rebuilt += try reader.readChunk(ch)
                off += ch.chunkSize
                chunkCount += 1
            }
            #expect(rebuilt == c, "chunks of \(h.name)")
        }
        // big: 4 chunks, exact: 2, hosts: 1, small: 1 (+ landmark 1)
        #expect(chunkCount == 8)
        #expect(reader.allChunks.count == 9)
        #expect(reader.chunk(for: "usr/big.bin", at: Int64(chunk * 3 + 1234)) == nil)
        #expect(reader.chunk(for: "usr/hard", at: Int64(chunk)) == reader.chunk(for: "usr/big.bin", at: Int64(chunk)))
        #expect(reader.chunk(for: "/usr/./big.bin", at: 0)?.name == "usr/big.bin")

        // TOC fields as the reference writes them.
        let toc = result.toc
        let bigEntries = toc.entries.filter { $0.name == "usr/big.bin" }
        #expect(bigEntries.map(\.type) == ["reg", "chunk", "chunk", "chunk"])
        #expect(bigEntries.map(\.chunkSize) == [Int64(chunk), Int64(chunk), Int64(chunk), 0])
        #expect(bigEntries[0].digest == Digest.sha256(of: input[4].1).description)
        #expect(bigEntries[0].xattrs == ["user.test": Array("v<&>".utf8)])
        #expect(toc.entries.filter { $0.name == "usr/exact.bin" }.map(\.chunkSize) == [Int64(chunk), Int64(chunk)])
        let hosts = try #require(toc.entries.first { $0.name == "etc/hosts" })
        #expect(hosts.userName == "user" && hosts.groupName == "grp" && hosts.uid == 1000)
        #expect(hosts.modtime == "2023-11-14T22:13:20Z")
        let small = try #require(toc.entries.first { $0.name == "usr/small" })
        #expect(small.userName == "" && small.groupName == "")  // only the first entry with a uid carries the name
        #expect(toc.entries.first { $0.name == "usr/hard" }?.type == "hardlink")
        #expect(toc.entries.first { $0.name == "usr/link" }?.linkName == "big.bin")
        #expect(toc.entries.first { $0.name == "etc/" }?.type == "dir")
        #expect(toc.entries.first { $0.name == "etc/empty" }?.offset == 0)
    }

    @Test func corruptChunkIsRejected() throws {
        let (tar, _) = try makeInputTar(chunk: chunk)
        let (blob, _) = try convert(tar, chunk: chunk)
        let reader = try EStargzReader(blob: blob)
        let ch = try #require(reader.chunk(for: "etc/hosts", at: 0))
        var tampered = ch
        tampered.chunkDigest = "sha256:" + String(repeating: "1", count: 64)
        #expect(throws: EStargzError.self) { try reader.readChunk(tampered) }
    }

    @Test func truncatedBlobIsRejected() throws {
        let (tar, _) = try makeInputTar(chunk: chunk)
        let (blob, _) = try convert(tar, chunk: chunk)
        #expect(throws: (any Error).self) { try EStargzReader(blob: Array(blob.dropLast(10))) }
        #expect(throws: (any Error).self) { try EStargzReader(blob: Array(blob.prefix(40))) }
    }

    @Test func jsonEscapingAndDecoding() throws {
        var e = TOCEntry(name: "a\"b\\<c>&\n\u{1}", type: "reg")
        e.size = 3
        e.xattrs = ["k": [0, 1, 2]]
        let toc = TOC(entries: [e])
        let json = String(decoding: toc.jsonBytes(), as: UTF8.self)
        #expect(json.contains(#""name": "a\"b\\\u003cc\u003e\u0026\n\u0001""#))
        #expect(json.contains(#""k": "AAEC""#))
        let back = try JSONDecoder().decode(TOC.self, from: Data(toc.jsonBytes()))
        #expect(back == toc)
    }
}

// MARK: - Interop with the reference implementation (Debian golang-github-containerd-stargz-snapshotter-dev)

let goPath = "/usr/share/gocode"
let referenceAvailable =
    FileManager.default.isExecutableFile(atPath: "/usr/bin/go")
    && FileManager.default.fileExists(atPath: goPath + "/src/github.com/containerd/stargz-snapshotter/estargz/estargz.go")

let goVerifier = #"""
    package main

    import (
    	"crypto/sha256"
    	"fmt"
    	"io"
    	"os"

    	"github.com/containerd/stargz-snapshotter/estargz"
    	digest "github.com/opencontainers/go-digest"
    )

    func fail(format string, a ...interface{}) {
    	fmt.Fprintf(os.Stderr, format+"\n", a...)
    	os.Exit(1)
    }

    func main() {
    	if len(os.Args) != 3 {
    		fail("usage: verify BLOB TOCDIGEST")
    	}
    	f, err := os.Open(os.Args[1])
    	if err != nil {
    		fail("open: %v", err)
    	}
    	st, err := f.Stat()
    	if err != nil {
    		fail("stat: %v", err)
    	}
    	r, err := estargz.Open(io.NewSectionReader(f, 0, st.Size()))
    	if err != nil {
    		fail("estargz.Open: %v", err)
    	}
    	v, err := r.VerifyTOC(digest.Digest(os.Args[2]))
    	if err != nil {
    		fail("VerifyTOC: %v", err)
    	}
    	root, ok := r.Lookup("")
    	if !ok {
    		fail("no root")
    	}
    	files, chunks := 0, 0
    	var walk func(dir string, e *estargz.TOCEntry)
    	walk = func(dir string, e *estargz.TOCEntry) {
    		e.ForeachChild(func(base string, ent *estargz.TOCEntry) bool {
    			name := base
    			if dir != "" {
    				name = dir + "/" + base
    			}
    			switch ent.Type {
    			case "dir":
    				walk(name, ent)
    			case "reg":
    				files++
    				fr, err := r.OpenFile(name)
    				if err != nil {
    					fail("OpenFile %s: %v", name, err)
    				}
    				h := sha256.New()
    				if _, err := io.Copy(h, io.NewSectionReader(fr, 0, ent.Size)); err != nil {
    					fail("read %s: %v", name, err)
    				}
    				if ent.Size > 0 {
    					got := digest.NewDigest(digest.SHA256, h)
    					if got.String() != ent.Digest {
    						fail("%s: content digest %s, TOC says %s", name, got, ent.Digest)
    					}
    				}
    				for off := int64(0); off < ent.Size; {
    					ce, ok := r.ChunkEntryForOffset(ent.Name, off) // hard links: chunks are keyed by the target
    					if !ok {
    						fail("%s: no chunk at %d", name, off)
    					}
    					cv, err := v.Verifier(ce)
    					if err != nil {
    						fail("%s: verifier: %v", name, err)
    					}
    					buf := make([]byte, ce.ChunkSize)
    					if _, err := fr.ReadAt(buf, ce.ChunkOffset); err != nil && err != io.EOF {
    						fail("%s: chunk read: %v", name, err)
    					}
    					cv.Write(buf)
    					if !cv.Verified() {
    						fail("%s: chunk at %d does not verify", name, ce.ChunkOffset)
    					}
    					chunks++
    					off = ce.ChunkOffset + ce.ChunkSize
    				}
    			}
    			return true
    		})
    	}
    	walk("", root)
    	fmt.Printf("ok files=%d chunks=%d\n", files, chunks)
    }
    """#

/// Builds an eStargz blob with the reference `estargz.Build`: `build IN.tar OUT CHUNKSIZE [PRIORITIZED,...]` prints the
/// TOC digest and diffID.
let goBuilder = #"""
    package main

    import (
    	"fmt"
    	"io"
    	"os"
    	"strconv"
    	"strings"

    	"github.com/containerd/stargz-snapshotter/estargz"
    )

    func main() {
    	in, err := os.Open(os.Args[1])
    	if err != nil {
    		panic(err)
    	}
    	st, _ := in.Stat()
    	cs, _ := strconv.Atoi(os.Args[3])
    	opts := []estargz.Option{estargz.WithChunkSize(cs)}
    	if len(os.Args) > 4 {
    		opts = append(opts, estargz.WithPrioritizedFiles(strings.Split(os.Args[4], ",")))
    	}
    	blob, err := estargz.Build(io.NewSectionReader(in, 0, st.Size()), opts...)
    	if err != nil {
    		fmt.Fprintln(os.Stderr, err)
    		os.Exit(1)
    	}
    	out, err := os.Create(os.Args[2])
    	if err != nil {
    		panic(err)
    	}
    	if _, err := io.Copy(out, blob); err != nil {
    		panic(err)
    	}
    	blob.Close()
    	out.Close()
    	fmt.Printf("%s %s\n", blob.TOCDigest(), blob.DiffID())
    }
    """#

@Suite(.tags(.integration)) struct EStargzReferenceInteropTests {
    @Test(.enabled(if: referenceAvailable, "needs golang-go and golang-github-containerd-stargz-snapshotter-dev"))
    func referenceOpensAndVerifiesOurBlob() async throws {
        let chunk = 64 << 10
        let (tar, input) = try makeInputTar(chunk: chunk)
        let (blob, result) = try convert(tar, chunk: chunk)
        let blobPath = try temporaryFile(blob, name: "layer.tar.gz")
        let dir = URL(fileURLWithPath: blobPath).deletingLastPathComponent().path
        try Data(goVerifier.utf8).write(to: URL(fileURLWithPath: dir + "/main.go"))
        let env = ["GO111MODULE": "off", "GOPATH": goPath, "GOCACHE": dir + "/gocache", "GOFLAGS": ""]
        let build = try await run("/usr/bin/go", ["build", "-o", dir + "/verify", "main.go"], environment: env, directory: dir)
        try #require(build.status == 0, "go build failed: \(build.output)")

        let ok = try await run(dir + "/verify", [blobPath, result.tocDigest.description])
        #expect(ok.status == 0, "reference verifier: \(ok.output)")
        let regular = input.filter { $0.0.type == .regular }.count + 1  // + landmark
        // Hard links resolve to their target in the reference reader, so they count as files too.
        #expect(ok.output.contains("ok files=\(regular + 1) chunks=13"), "\(ok.output)")  // 9 chunks + the 4 of big.bin again via usr/hard

        // A wrong TOC digest must be rejected by the reference.
        let wrong = try await run(dir + "/verify", [blobPath, "sha256:" + String(repeating: "0", count: 64)])
        #expect(wrong.status != 0)
        #expect(wrong.output.contains("VerifyTOC"))
    }

    @Test(.enabled(if: referenceAvailable, "needs golang-go and golang-github-containerd-stargz-snapshotter-dev"))
    func weReadAndVerifyReferenceBlob() async throws {
        let chunk = 64 << 10
        let (tar, input) = try makeInputTar(chunk: chunk)
        let tarPath = try temporaryFile(tar, name: "layer.tar")
        let dir = URL(fileURLWithPath: tarPath).deletingLastPathComponent().path
        try Data(goBuilder.utf8).write(to: URL(fileURLWithPath: dir + "/main.go"))
        let env = ["GO111MODULE": "off", "GOPATH": goPath, "GOCACHE": dir + "/gocache", "GOFLAGS": ""]
        let build = try await run("/usr/bin/go", ["build", "-o", dir + "/build", "main.go"], environment: env, directory: dir)
        try #require(build.status == 0, "go build failed: \(build.output)")
        let out = try await run(dir + "/build", [tarPath, dir + "/blob", String(chunk)])
        try #require(out.status == 0, "estargz.Build: \(out.output)")
        let fields = out.output.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
        try #require(fields.count == 2)

        let blob = Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/blob")))
        let reader = try EStargzReader(blob: blob)
        try reader.verifyTOC(try Digest(fields[0]))
        let (diffID, _) = try LayerDigester.diffID(ofLayerAt: dir + "/blob", compression: .gzip)
        #expect(diffID == fields[1])
        for (h, c) in input where h.type == .regular && !c.isEmpty {
            var off: Int64 = 0
            var rebuilt: [UInt8] = []
            while off < Int64(c.count) {
                let ch = try #require(reader.chunk(for: h.name, at: off), "chunk of \(h.name) at \(off)")
                rebuilt += try reader.readChunk(ch)
                off += ch.chunkSize
            }
            #expect(rebuilt == c, "contents of \(h.name)")
        }
        #expect(reader.toc.entries.contains { $0.name == noPrefetchLandmarkName })
        // Our JSON encoder reproduces the reference's json.MarshalIndent output byte for byte.
        #expect(reader.toc.jsonBytes() == reader.tocJSON)

        // Our TOC for the same input has the same entries and fields; only offsets differ.
        let (_, ours) = try convert(tar, chunk: chunk)
        func strip(_ e: TOCEntry) -> TOCEntry {
            var e = e
            e.offset = 0
            // estargz.Build writes its parts in parallel, each with its own "name only on first use of a uid" map,
            // so user/group names repeat per part; readers back-fill them, compare them separately.
            e.userName = ""
            e.groupName = ""
            return e
        }
        let a = ours.toc.entries.map(strip)
        let b = reader.toc.entries.map(strip)
        #expect(a.count == b.count)
        #expect(ours.toc.entries.first { $0.name == "etc/hosts" }?.userName == "user")
        for (x, y) in zip(a, b) where x != y { Issue.record("ours \(x)\nreference \(y)") }
    }
}
