// Command estargz-reference converts one layer blob to eStargz with the reference implementation,
// estargz.Build from github.com/containerd/stargz-snapshotter/estargz, and prints one JSON line:
//
//	{"seconds":1.23,"input_bytes":...,"output_bytes":...,"toc_digest":"sha256:...","diff_id":"sha256:...","gomaxprocs":2}
//
// The input may be a gzip- or zstd-compressed tar or a plain tar: Build sniffs the magic bytes itself and,
// if compressed, first decompresses the whole blob into a temporary file (in $TMPDIR) on one goroutine.
// "seconds" covers Build, copying its result to -out (fsync'ed) and Close. It splits into build_seconds,
// until Build returns (decompressing the input, indexing the tar, compressing GOMAXPROCS parts in parallel
// into temporary files, the TOC), and copy_seconds (concatenating the parts into -out while another
// goroutine decompresses the whole output again for the diffID, which is only known after that copy).
//
// Built in GOPATH mode against Debian's golang-github-containerd-stargz-snapshotter-dev:
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o estargz-reference main.go
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
)

type result struct {
	Seconds     float64 `json:"seconds"`
	BuildSecs   float64 `json:"build_seconds"`
	CopySecs    float64 `json:"copy_seconds"`
	InputBytes  int64   `json:"input_bytes"`
	OutputBytes int64   `json:"output_bytes"`
	TOCDigest   string  `json:"toc_digest"`
	DiffID      string  `json:"diff_id"`
	ChunkSize   int     `json:"chunk_size"`
	Level       int     `json:"level"`
	GOMAXPROCS  int     `json:"gomaxprocs"`
}

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "estargz-reference: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	chunkSize := flag.Int("chunk-size", 4<<20, "uncompressed bytes per chunk (estargz.WithChunkSize)")
	level := flag.Int("level", 9, "gzip compression level (estargz.WithCompressionLevel); the reference default is 9")
	in := flag.String("in", "", "input layer blob: tar, tar+gzip or tar+zstd")
	out := flag.String("out", "", "output eStargz blob")
	flag.Parse()
	if *in == "" || *out == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: estargz-reference [-chunk-size N] [-level L] -in LAYER -out BLOB")
		os.Exit(2)
	}

	start := time.Now()
	f, err := os.Open(*in)
	if err != nil {
		fail("%v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		fail("%v", err)
	}
	blob, err := estargz.Build(io.NewSectionReader(f, 0, st.Size()),
		estargz.WithChunkSize(*chunkSize), estargz.WithCompressionLevel(*level))
	if err != nil {
		fail("estargz.Build: %v", err)
	}
	built := time.Now()
	o, err := os.Create(*out)
	if err != nil {
		fail("%v", err)
	}
	n, err := io.Copy(o, blob)
	if err != nil {
		fail("copying the blob: %v", err)
	}
	if err := o.Sync(); err != nil {
		fail("%v", err)
	}
	if err := o.Close(); err != nil {
		fail("%v", err)
	}
	if err := blob.Close(); err != nil { // removes Build's temporary files
		fail("closing the blob: %v", err)
	}
	end := time.Now()

	line, _ := json.Marshal(result{
		Seconds: end.Sub(start).Seconds(), BuildSecs: built.Sub(start).Seconds(), CopySecs: end.Sub(built).Seconds(), InputBytes: st.Size(), OutputBytes: n,
		TOCDigest: blob.TOCDigest().String(), DiffID: blob.DiffID().String(),
		ChunkSize: *chunkSize, Level: *level, GOMAXPROCS: runtime.GOMAXPROCS(0),
	})
	fmt.Println(string(line))
}
