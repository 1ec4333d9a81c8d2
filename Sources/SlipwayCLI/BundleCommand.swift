import ArgumentParser
import ContentStore
import Images
import Foundation
import OCI
import Runtime
import Slipway

#if canImport(Glibc)
import Glibc
#endif

/// `slipway bundle REF DIR`: an OCI runtime bundle (config.json + rootfs) for Slurm's `srun --container=DIR`.
struct Bundle: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make an OCI runtime bundle (DIR/config.json and DIR/rootfs) of an image, for Slurm's srun --container=DIR.",
        discussion: """
            As root the rootfs is a read-only overlay of the store's layer cache (nothing is copied; mount it on each \
            node, or once where the nodes share mounts), and config.json maps --owner (default: the user sudo ran \
            as, else root) to root in a user namespace, since Slurm runs the runtime as the job's user. Without root \
            the image is extracted into DIR/rootfs and config.json maps you. `slipway bundle --remove DIR` unmounts \
            and deletes a bundle. Write oci.conf with `slipway slurm oci-conf`.
            """)

    static let marker = ".slipway-bundle"

    @OptionGroup var global: GlobalOptions
    @OptionGroup var decompression: DecompressionOptions
    @Argument(help: "Image reference or oci:PATH[:NAME].") var image: String?
    @Argument(help: "The bundle directory (created; it must not exist or be empty).") var directory: String?
    @Option(help: "As root: the user the bundle is for (name or uid); the runtime runs as that user.") var owner: String?
    @Option(help: "Unmount and delete the bundle at DIR (instead of making one).") var remove: String?

    func validate() throws {
        if remove != nil { guard image == nil else { throw ValidationError("--remove DIR takes no other argument") } }
        else if directory == nil { throw ValidationError("give an image reference and a directory: slipway bundle REF DIR") }
    }

    func run() async throws {
        if let remove { return try Self.removeBundle(resolvedPath(remove)) }
        guard let image, let directory else { return }
        let path = resolvedPath(directory)
        let location = try parseLocation(image)
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: path), !entries.isEmpty {
            throw ValidationError("\(directory) exists and is not empty: choose a new directory, or remove it with slipway bundle --remove")
        }
        let identity = try bundleIdentity()
        let store = try global.openStore()
        let display = global.makeProgress()
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try Data().write(to: URL(fileURLWithPath: "\(path)/\(Self.marker)"))
        let rootfs = "\(path)/rootfs"
        do {
            try await global.withSession(for: [location]) { session in
                let puller = Puller(session: session, store: store, progress: display.handler)
                let resolved = try await puller.image(location, policy: .missing)
                if geteuid() == 0 {
                    _ = try await Unpacker(store: store, progress: display.handler).cacheLayers(resolved)
                    try FileManager.default.createDirectory(atPath: rootfs, withIntermediateDirectories: false)
                    var lowers = RootfsAssembly.overlayLowers(of: resolved, in: store)
                    // A read-only overlay needs two lower directories: a one-layer image gets an empty one below.
                    if lowers.count < 2 {
                        let empty = "\(path)/.empty"
                        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: false)
                        lowers.append(empty)
                    }
                    try await Mounts.overlay(lowers: lowers, upper: nil, work: nil, at: rootfs)
                } else {
                    _ = try await Unpacker(store: store, progress: display.handler).unpack(resolved, to: rootfs)
                }
                display.finish()
                var options = RunConfiguration()
                options.hostname = "slipway"
                let spec = try RuntimeBundle.makeSpec(
                    image: resolved.config.config, options: options, rootfs: rootfs, readOnlyRootfs: geteuid() == 0, identity: identity,
                    containerID: (path as NSString).lastPathComponent, users: UserResolver(rootfs: rootfs))
                var relative = spec
                relative.root.path = "rootfs"
                // Every task of every step runs this bundle at once: the runtime names each one's cgroup by its id.
                relative.linux.cgroupsPath = nil
                try RuntimeBundle.writeConfig(relative, to: path)
            }
        } catch {
            try? Self.removeBundle(path)
            throw error
        }
        if !global.quiet { FileHandle.standardError.write(Data("slipway: bundle of \(image) at \(path); run it with srun --container=\(path)\n".utf8)) }
    }

    /// Who the bundle's user namespace maps to root: Slurm runs the runtime as the job's user, rootless.
    func bundleIdentity() throws -> RuntimeIdentity {
        guard geteuid() == 0 else { return .rootless(hostUID: geteuid(), hostGID: getegid()) }
        let name = owner ?? ProcessInfo.processInfo.environment["SUDO_USER"]
        guard let name, name != "root", name != "0" else { return .root }
        let entry = UInt32(name).flatMap { getpwuid($0) } ?? getpwnam(name)
        guard let entry else { throw ValidationError("--owner \(name): no such user") }
        return .rootless(hostUID: entry.pointee.pw_uid, hostGID: entry.pointee.pw_gid)
    }

    static func removeBundle(_ path: String) throws {
        guard FileManager.default.fileExists(atPath: "\(path)/\(marker)") else {
            throw ValidationError("\(path) is not a bundle slipway made (no \(marker)); nothing was removed")
        }
        let left = Mounts.unmountAll(under: path)
        guard left.isEmpty else { throw ValidationError("\(path): still mounted and busy: \(left.joined(separator: ", "))") }
        RunDirectory.removeTree(path)
    }
}
