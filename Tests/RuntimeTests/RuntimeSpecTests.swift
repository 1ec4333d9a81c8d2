import Foundation
import OCI
import Testing
import TestSupport

@testable import Runtime

/// The OCI runtime spec built from an image config and `slipway run`'s options, with Docker's rules.
@Suite(.tags(.unit)) struct RuntimeSpecTests {
    let users = UserResolver(
        passwd: "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\n",
        group: "root:x:0:\napp:x:1000:\nvideo:x:44:app\naudio:x:29:other,app\n")

    func makeSpec(
        _ image: ImageConfig.ContainerConfig?, _ options: RunConfiguration = RunConfiguration(), identity: RuntimeIdentity = .root,
        rootfs: String = "/nonexistent-rootfs", readOnly: Bool = false
    ) throws -> RuntimeSpec {
        try RuntimeBundle.makeSpec(
            image: image, options: options, rootfs: rootfs, readOnlyRootfs: readOnly, identity: identity, containerID: "c1", users: users)
    }

    @Test func entrypointAndCmdCombineAsDockerDoes() throws {
        let image = ImageConfig.ContainerConfig(Entrypoint: ["/entry", "--flag"], Cmd: ["default"])
        #expect(try makeSpec(image).process.args == ["/entry", "--flag", "default"])
        // A command replaces Cmd and keeps the Entrypoint.
        #expect(try makeSpec(image, RunConfiguration(command: ["given"])).process.args == ["/entry", "--flag", "given"])
        // A new Entrypoint drops the image's Cmd.
        #expect(try makeSpec(image, RunConfiguration(entrypoint: ["/other"])).process.args == ["/other"])
        #expect(try makeSpec(image, RunConfiguration(command: ["x"], entrypoint: ["/other"])).process.args == ["/other", "x"])
        // An empty Entrypoint clears it.
        #expect(try makeSpec(image, RunConfiguration(command: ["sh"], entrypoint: [])).process.args == ["sh"])
        #expect(try makeSpec(ImageConfig.ContainerConfig(Cmd: ["/bin/sh"])).process.args == ["/bin/sh"])
    }

    @Test func nothingToRunIsRefused() {
        #expect {
            try makeSpec(ImageConfig.ContainerConfig(Env: ["A=1"]))
        } throws: { error in
            guard case RuntimeError.noCommand = error else { return false }
            return true
        }
        #expect(throws: RuntimeError.self) { try makeSpec(ImageConfig.ContainerConfig(Entrypoint: ["/e"]), RunConfiguration(entrypoint: [])) }
    }

    @Test func environmentMergesByKeyAndOverridesWin() throws {
        let image = ImageConfig.ContainerConfig(Env: ["PATH=/image/bin", "A=1", "B=2"], Cmd: ["x"])
        let env = try makeSpec(image, RunConfiguration(environment: ["A=override", "C=3=with=equals"])).process.env
        #expect(env == ["PATH=/image/bin", "A=override", "B=2", "C=3=with=equals", "HOME=/root"])
    }

    @Test func pathAndHomeAreDefaulted() throws {
        let env = try makeSpec(ImageConfig.ContainerConfig(Env: ["A=1"], Cmd: ["x"]), RunConfiguration(user: "app")).process.env
        #expect(env == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1", "HOME=/home/app"])
        let given = try makeSpec(ImageConfig.ContainerConfig(Cmd: ["x"]), RunConfiguration(environment: ["HOME=/custom"])).process.env
        #expect(given.filter { $0.hasPrefix("HOME=") } == ["HOME=/custom"])
        // A uid without an entry gets / as home.
        #expect(try makeSpec(ImageConfig.ContainerConfig(Cmd: ["x"]), RunConfiguration(user: "4242")).process.env.last == "HOME=/")
    }

    @Test func workingDirectoryComesFromOptionsThenImage() throws {
        let image = ImageConfig.ContainerConfig(Cmd: ["x"], WorkingDir: "/image/dir")
        #expect(try makeSpec(image).process.cwd == "/image/dir")
        #expect(try makeSpec(image, RunConfiguration(workingDirectory: "/given")).process.cwd == "/given")
        #expect(try makeSpec(ImageConfig.ContainerConfig(Cmd: ["x"])).process.cwd == "/")
        #expect(try makeSpec(ImageConfig.ContainerConfig(Cmd: ["x"], WorkingDir: "")).process.cwd == "/")
        #expect(try makeSpec(ImageConfig.ContainerConfig(Cmd: ["x"], WorkingDir: "relative")).process.cwd == "/relative")
    }

    @Test func userIsResolvedWithItsGroupsAndLosesCapabilities() throws {
        var image = ImageConfig.ContainerConfig(Cmd: ["x"])
        image.User = "app"
        let process = try makeSpec(image).process
        #expect(process.user == RuntimeSpec.User(uid: 1000, gid: 1000, additionalGids: [44, 29]))
        #expect(process.capabilities?.effective == [])
        #expect(process.capabilities?.bounding == RuntimeBundle.defaultCapabilities)
        // The option wins over the image's User.
        let root = try makeSpec(image, RunConfiguration(user: "0")).process
        #expect(root.user == RuntimeSpec.User(uid: 0, gid: 0))
        #expect(root.capabilities?.effective == RuntimeBundle.defaultCapabilities)
        #expect(root.noNewPrivileges)
    }

    @Test func rootlessRunsOnlyAsTheMappedRoot() throws {
        let rootless = RuntimeIdentity.rootless(hostUID: 1234, hostGID: 5678)
        let spec = try makeSpec(ImageConfig.ContainerConfig(Cmd: ["x"]), identity: rootless)
        #expect(spec.linux.uidMappings == [RuntimeSpec.IDMapping(containerID: 0, hostID: 1234, size: 1)])
        #expect(spec.linux.gidMappings == [RuntimeSpec.IDMapping(containerID: 0, hostID: 5678, size: 1)])
        #expect(spec.linux.namespaces.map(\.type) == ["pid", "ipc", "uts", "mount", "user"])
        #expect(spec.linux.cgroupsPath == nil)
        #expect {
            try self.makeSpec(ImageConfig.ContainerConfig(Cmd: ["x"]), RunConfiguration(user: "app"), identity: rootless)
        } throws: { error in
            "\(error)".hasPrefix("user 'app': without root only your own user is mapped")
        }
    }

    @Test func rootRunsInItsOwnCgroupWithoutDevices() throws {
        let spec = try makeSpec(ImageConfig.ContainerConfig(Cmd: ["x"]))
        #expect(spec.linux.namespaces.map(\.type) == ["pid", "ipc", "uts", "mount"])
        #expect(spec.linux.cgroupsPath == "/slipway/c1")
        #expect(spec.linux.resources?.devices == [RuntimeSpec.DeviceRule(allow: false, access: "rwm")])
        #expect(spec.linux.uidMappings == nil)
    }

    @Test func mountsHaveTheKernelFilesystemsTheHostNameFilesAndTheBinds() throws {
        let binds = [BindMount(source: "/host/a", destination: "/a"), BindMount(source: "/host/b", destination: "/b", readOnly: true)]
        let spec = try makeSpec(ImageConfig.ContainerConfig(Cmd: ["x"]), RunConfiguration(binds: binds))
        let byDestination = Dictionary(spec.mounts.map { ($0.destination, $0) }, uniquingKeysWith: { first, _ in first })
        for kernel in ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"] { #expect(byDestination[kernel] != nil, "\(kernel)") }
        #expect(byDestination["/sys"]?.type == "sysfs")
        #expect(byDestination["/dev/pts"]?.options?.contains("gid=5") == true)
        for file in ["/etc/resolv.conf", "/etc/hosts"] {
            #expect((byDestination[file] != nil) == FileManager.default.fileExists(atPath: file), "\(file)")
            if let mount = byDestination[file] { #expect(Set(mount.options ?? []).isSuperset(of: ["ro", "nosuid", "nodev"])) }
        }
        #expect(byDestination["/a"] == RuntimeSpec.Mount(destination: "/a", type: "bind", source: "/host/a", options: ["rbind", "rw", "nosuid", "nodev"]))
        #expect(byDestination["/b"]?.options == ["rbind", "ro", "nosuid", "nodev"])
        // Binds come after everything they could be hidden by.
        #expect(spec.mounts.suffix(2).map(\.destination) == ["/a", "/b"])
        #expect(spec.hostname == "slipway")
        #expect(spec.root == RuntimeSpec.Root(path: "/nonexistent-rootfs", readonly: false))
    }

    @Test func rootlessBindsSysAndLeavesTheTTYGroupOut() throws {
        let spec = try makeSpec(ImageConfig.ContainerConfig(Cmd: ["x"]), identity: .rootless(hostUID: 1, hostGID: 1))
        let sys = try #require(spec.mounts.first { $0.destination == "/sys" })
        #expect(sys.type == "bind")
        #expect(sys.options?.contains("ro") == true)
        #expect(spec.mounts.first { $0.destination == "/dev/pts" }?.options?.contains("gid=5") == false)
    }

    @Test func readOnlyRootMustHaveItsMountpoints() throws {
        let directory = try ScratchDirectory()
        let rootfs = directory.path
        for name in ["proc", "dev"] { try FileManager.default.createDirectory(atPath: "\(rootfs)/\(name)", withIntermediateDirectories: true) }
        #expect {
            try makeSpec(ImageConfig.ContainerConfig(Cmd: ["x"]), rootfs: rootfs, readOnly: true)
        } throws: { error in
            guard case RuntimeError.readOnlyRootLacks(let missing) = error else { return false }
            return missing == ["/sys"]
        }
        try FileManager.default.createDirectory(atPath: "\(rootfs)/sys", withIntermediateDirectories: true)
        let readOnly = try makeSpec(ImageConfig.ContainerConfig(Cmd: ["x"]), rootfs: rootfs, readOnly: true)
        #expect(readOnly.root.readonly)
        // Without /etc/hosts in the image there is nothing to mount the host's on.
        #expect(!readOnly.mounts.contains { $0.destination == "/etc/hosts" })
        #expect {
            try makeSpec(ImageConfig.ContainerConfig(Cmd: ["x"]), RunConfiguration(binds: [BindMount(source: "/tmp", destination: "/data")]),
                rootfs: rootfs, readOnly: true)
        } throws: { error in
            guard case RuntimeError.bindDestinationMissing(let path) = error else { return false }
            return path == "/data"
        }
    }

    @Test func bundleIsWrittenAsConfigJSON() throws {
        let directory = try ScratchDirectory()
        let rootfs = directory.sub("rootfs")
        try FileManager.default.createDirectory(atPath: "\(rootfs)/etc", withIntermediateDirectories: true)
        try "root:x:0:0::/root:/bin/sh\nsvc:x:77:88::/srv:/bin/sh\n".write(toFile: "\(rootfs)/etc/passwd", atomically: true, encoding: .utf8)
        let bundle = try RuntimeBundle.write(
            to: directory.sub("bundle"), image: ImageConfig.ContainerConfig(Cmd: ["/bin/true"]), options: RunConfiguration(user: "svc"),
            rootfs: rootfs, readOnlyRootfs: false, identity: .root, containerID: "c2")
        let written = try JSONDecoder().decode(RuntimeSpec.self, from: Data(contentsOf: URL(fileURLWithPath: bundle.configPath)))
        #expect(written == bundle.spec)
        #expect(written.process.user == RuntimeSpec.User(uid: 77, gid: 88))
        #expect(written.process.env.last == "HOME=/srv")
        #expect(written.ociVersion == "1.0.2")
    }
}
