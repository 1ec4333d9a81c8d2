import ArgumentParser
import ContentStore
import Foundation
import Snapshotter

struct SnapshotterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshotter",
        abstract: "Serve containerd's snapshots API from Slipway's store (a proxy snapshotter plugin).",
        discussion: """
            containerd's config.toml names the socket:

              [proxy_plugins.slipway]
                type = "snapshot"
                address = "/run/slipway/snapshotter.sock"

            and `ctr --snapshotter slipway` or the CRI plugin's `snapshotter = "slipway"` use it. Layers the store \
            has extracted already (slipway pull --unpack-layers, run, mount) are not extracted again. Snapshots \
            live in --root and survive restarts of the snapshotter and of containerd. While it runs, the store is in \
            use: `slipway gc` waits for it.
            """)

    @OptionGroup var global: GlobalOptions
    @Option(help: "The unix socket to serve on (containerd's proxy_plugins address).") var address = "/run/slipway/snapshotter.sock"
    @Option(help: "Where the snapshots live [STORE/snapshotter].") var root: String?

    func run() async throws {
        let store = try global.openStore()
        // The snapshots of layers the store has extracted are those directories: gc must not remove them.
        let lease = try await store.lockForWriting()
        defer { lease.release() }
        let snapshotRoot = root.map(resolvedPath) ?? "\(store.root)/snapshotter"
        let snapshots = try await SnapshotStore(root: snapshotRoot)
        // What a crash of the last snapshotter left half made; containerd would only ask after its next collection.
        let leftovers = try await snapshots.cleanup()
        if leftovers > 0 {
            FileHandle.standardError.write(Data("slipway snapshotter: removed \(leftovers) unnamed snapshot directories\n".utf8))
        }
        let server = try SnapshotterServer(service: SnapshotService(snapshots: snapshots, store: store), socket: resolvedPath(address))
        let signals = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { server.stop() }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        try await server.run {
            FileHandle.standardError.write(Data(
                "slipway snapshotter: serving on \(server.socket), snapshots in \(snapshotRoot), layers from \(store.root)\n".utf8))
        }
        await snapshots.close()
        FileHandle.standardError.write(Data("slipway snapshotter: stopped\n".utf8))
    }
}
