import Foundation
import Testing
import TestSupport

let goPath = "/usr/share/gocode"

/// go (golang-go) and containerd's Go client (golang-github-containerd-containerd-dev) are installed.
let containerdGoClientAvailable = FileManager.default.isExecutableFile(atPath: "/usr/bin/go")
    && FileManager.default.fileExists(atPath: goPath + "/src/github.com/containerd/containerd/snapshots/proxy/proxy.go")

/// Builds, under `scratch`, a client that prepares a snapshot through containerd's snapshots service with the label
/// containerd's unpacker puts on a layer it may skip, as a pull by a CRI client does (ctr pulls, then unpacks without
/// it). It prints "already exists" when containerd answers so, "prepared" when it prepared the snapshot.
/// Usage: prepare-with-reference SOCKET NAMESPACE SNAPSHOTTER KEY CHAIN-ID
func buildPrepareWithReference(_ scratch: ScratchDirectory) async throws -> String {
    let directory = scratch.sub("prepare-with-reference")
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    try prepareWithReferenceSource.write(toFile: directory + "/main.go", atomically: true, encoding: .utf8)
    let environment = ["GO111MODULE": "off", "GOPATH": goPath, "GOCACHE": NSTemporaryDirectory() + "/slipway-test-gocache", "GOFLAGS": ""]
    let build = try await run("/usr/bin/go", ["build", "-o", "prepare-with-reference", "main.go"], environment: environment, directory: directory)
    try #require(build.status == 0, "go build: \(build.output)")
    return directory + "/prepare-with-reference"
}

private let prepareWithReferenceSource = #"""
package main

import (
	"context"
	"fmt"
	"os"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/dialer"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"google.golang.org/grpc"
)

func main() {
	socket, namespace, snapshotter, key, chainID := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	conn, err := grpc.Dial(dialer.DialAddress(socket), grpc.WithInsecure(), grpc.WithContextDialer(dialer.ContextDialer))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	service := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), snapshotter)
	ctx := namespaces.WithNamespace(context.Background(), namespace)
	_, err = service.Prepare(ctx, key, "", snapshots.WithLabels(map[string]string{
		"containerd.io/snapshot.ref": chainID,
		// A root for containerd's garbage collector, as ctr's prepare sets; a pull holds a lease instead.
		"containerd.io/gc.root": "prepare-with-reference",
	}))
	switch {
	case err == nil:
		fmt.Println("prepared")
	case errdefs.IsAlreadyExists(err):
		fmt.Println("already exists")
	default:
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
"""#
