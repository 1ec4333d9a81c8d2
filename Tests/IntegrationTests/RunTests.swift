import ContentStore
import Foundation
import OCI
import Runtime
import SIF
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

let runtimesInstalled = ["/usr/sbin/runc", "/usr/bin/crun"].allSatisfy(FileManager.default.isExecutableFile)
let runTestsEnabled = geteuid() == 0 && runtimesInstalled && FileManager.default.isExecutableFile(atPath: "/bin/busybox")

let sifConversionAvailable = runTestsEnabled && FileManager.default.isExecutableFile(atPath: "/usr/bin/mksquashfs")

/// `slipway run` end to end as root: a two-layer busybox image from a real registry, run under runc and crun (on
/// this host crun needs the hybrid-cgroup workaround), from the overlay of the layer cache, from a lazy mount and
/// from a SIF; exit codes, signals, binds, and that nothing stays mounted whatever happens.
@Suite(.tags(.integration, .slow), .enabled(if: runTestsEnabled, "needs root, runc, crun and busybox-static"), .serialized)
struct RunTests {
    /// What every mode and runtime must print the same: the overlay's whiteout and opaque directory applied, the
    /// hostname, a write to the (throwaway) root, the image's working directory and environment.
    static let probe = """
        echo "hello from $(hostname)"; cat /version.txt; ls /etc; ls /opq; echo "home=$HOME path=$PATH"; id -u; \
        echo scratch > /tmp/written && cat /tmp/written; pwd; echo "pid=$$"
        """

    /// Pushes the tools image as `host/tools:1` and its eStargz conversion as `host/tools:1-esgz`.
    func publish(_ registry: RegistryProcess, _ scratch: ScratchDirectory) async throws -> (plain: String, lazy: String) {
        try await publish(registry.host, scratch)
    }

    func publish(_ host: String, _ scratch: ScratchDirectory) async throws -> (plain: String, lazy: String) {
        let layout = try await makeToolsLayout(scratch)
        let plain = "\(host)/tools:1"
        let lazy = "\(host)/tools:1-esgz"
        let copied = try await run(slipwayBinary, ["copy", "-q", "oci:\(layout):tools", plain])
        try #require(copied.status == 0, "copy: \(copied.stderr)")
        let converted = try await run(slipwayBinary, ["convert", "-q", "--store", scratch.sub("convert-store"), plain, lazy])
        try #require(converted.status == 0, "convert: \(converted.stderr)")
        return (plain, lazy)
    }

    /// `slipway run -q --store STORE ARGS...`.
    func slipwayRun(_ store: String, _ arguments: [String]) async throws -> ProcessResult {
        try await run(slipwayBinary, ["run", "-q", "--store", store] + arguments)
    }

    /// Nothing mounted under the scratch directory, no run directory left in the store, no container left in
    /// either runtime's state.
    func expectCleanedUp(_ scratch: ScratchDirectory, _ sourceLocation: SourceLocation = #_sourceLocation) async throws {
        // Mounts.table reads /proc/self/mountinfo to its end (one read of a /proc file can stop short).
        let table = Mounts.table()
        #expect(table.contains { $0.mountpoint == "/" }, "mountinfo unreadable", sourceLocation: sourceLocation)
        let left = table.map(\.mountpoint).filter { $0.hasPrefix(scratch.path) }
        #expect(left.isEmpty, "still mounted: \(left)", sourceLocation: sourceLocation)
        for store in (try? FileManager.default.contentsOfDirectory(atPath: scratch.path)) ?? [] {
            let runs = (try? FileManager.default.contentsOfDirectory(atPath: scratch.sub("\(store)/run"))) ?? []
            #expect(runs.isEmpty, "run directories left in \(store): \(runs)", sourceLocation: sourceLocation)
            let states = ((try? FileManager.default.contentsOfDirectory(atPath: scratch.sub("\(store)/mounts"))) ?? []).filter { $0.hasSuffix(".json") }
            #expect(states.isEmpty, "lazy mount states left in \(store): \(states)", sourceLocation: sourceLocation)
        }
        // Only this test's containers (their bundles are under its scratch directory): other suites run
        // containers at the same time.
        let containers = try await run("/usr/sbin/runc", ["list"]).stdout + ((try? await run("/usr/bin/crun", ["list"]).stdout) ?? "")
        let ours = containers.split(separator: "\n").filter { $0.contains(scratch.path) }
        #expect(ours.isEmpty, "containers left: \(ours)", sourceLocation: sourceLocation)
    }

    @Test func runcAndCrunPrintTheSameInEveryMode() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let (plain, lazy) = try await publish(registry, scratch)
            var outputs: [String: String] = [:]
            for runtime in ["runc", "crun"] {
                for (mode, reference) in [("unpacked", plain), ("lazy", lazy)] {
                    let result = try await slipwayRun(
                        scratch.sub("store"), ["--runtime", runtime, "--mode", mode, reference, "--", "/bin/sh", "-c", Self.probe])
                    #expect(result.status == 0, "\(runtime) \(mode): \(result.stderr)")
                    outputs["\(runtime) \(mode)"] = result.stdout
                    try await expectCleanedUp(scratch)
                }
            }
            let reference = try #require(outputs["runc unpacked"])
            #expect(reference.hasPrefix("hello from slipway\ntools 1\n"), "\(reference)")
            #expect(!reference.contains("gone.txt") && reference.contains("passwd"), "the whiteout was not applied: \(reference)")
            #expect(reference.contains("new.txt") && !reference.contains("old.txt"), "the opaque directory was not applied: \(reference)")
            #expect(reference.hasSuffix("home=/root path=/usr/local/bin:/usr/bin:/bin\n0\nscratch\n/\npid=1\n"), "\(reference)")
            for (name, output) in outputs { #expect(output == reference, "\(name) differs from runc unpacked:\n\(output)") }
            // The throwaway layer is gone: a second run does not see the first run's write.
            let again = try await slipwayRun(scratch.sub("store"), ["--runtime", "runc", plain, "--", "/bin/sh", "-c", "cat /tmp/written || echo absent"])
            #expect(again.stdout.contains("absent"), "\(again.stdout)")
        }
        try await expectCleanedUp(scratch)
    }

    @Test func aNodeThatRanAnImageRunsItAgainWithoutTheRegistry() async throws {
        let scratch = try ScratchDirectory()
        let store = scratch.sub("store")
        let registry = try await RegistryProcess.start()
        let (plain, _) = try await publish(registry, scratch)
        let first = try await slipwayRun(store, [plain, "--", "/bin/cat", "/version.txt"])
        #expect(first.status == 0 && first.stdout == "tools 1\n", "\(first.stderr)")
        await registry.stop()
        // The default policy (missing) uses the store's copy; `always` must ask the registry, which is gone.
        let again = try await slipwayRun(store, [plain, "--", "/bin/cat", "/version.txt"])
        #expect(again.status == 0 && again.stdout == "tools 1\n", "\(again.stderr)")
        let always = try await slipwayRun(store, ["--pull", "always", plain, "--", "/bin/true"])
        #expect(always.status == 1, "\(always.stderr)")
        let never = try await slipwayRun(scratch.sub("empty-store"), ["--pull", "never", plain, "--", "/bin/true"])
        #expect(never.status != 0 && never.stderr.contains("--pull never"), "\(never.stderr)")
        try await expectCleanedUp(scratch)
    }

    @Test func aLazyRunRecordsTheFilesItReadForPrioritizing() async throws {
        let scratch = try ScratchDirectory()
        let store = scratch.sub("store")
        try await RegistryProcess.withRegistry { registry in
            let (_, lazy) = try await publish(registry, scratch)
            let record = scratch.sub("record.txt")
            let result = try await slipwayRun(
                store, ["--mode", "lazy", "--prefetch", "none", "--record", record, lazy, "--", "/bin/sh", "-c", "cat /version.txt /opq/new.txt >/dev/null"])
            #expect(result.status == 0, "\(result.stderr)")
            let paths = try String(contentsOfFile: record, encoding: .utf8).split(separator: "\n").map(String.init)
            let version = try #require(paths.firstIndex(of: "version.txt"), "\(paths)")
            let group = try #require(paths.firstIndex(of: "opq/new.txt"), "\(paths)")
            #expect(version < group, "first-access order: \(paths)")
            #expect(paths.contains("bin/busybox"))
            // The list is what convert --prioritize takes.
            let optimized = "\(registry.host)/tools:1-opt"
            let converted = try await run(slipwayBinary, ["convert", "-q", "--store", scratch.sub("convert-store"), "--prioritize", record, lazy, optimized])
            #expect(converted.status == 0, "\(converted.stderr)")
            try await expectCleanedUp(scratch)
        }
    }

    @Test func aLazyRunLeavesItsLayersSoTheNextRunNeedsNoFUSE() async throws {
        let scratch = try ScratchDirectory()
        let store = scratch.sub("store")
        try await RegistryProcess.withRegistry { registry in
            let (_, lazy) = try await publish(registry, scratch)
            // The default prefetch brings the rest of the image (the files the top layer hides too) by the run's end.
            let readAll = "find / -xdev -type f -exec cat {} + >/dev/null; " + Self.probe
            let first = try await slipwayRun(store, ["--mode", "lazy", lazy, "--", "/bin/sh", "-c", readAll])
            #expect(first.status == 0, "\(first.stderr)")
            let materialized = (try? FileManager.default.contentsOfDirectory(atPath: "\(store)/layers/toc/sha256")) ?? []
            #expect(materialized.count == 2, "\(materialized)")
            // Without its chunks: a lazy mount would make the chunk cache again and fetch into it.
            try FileManager.default.removeItem(atPath: "\(store)/chunks")
            let second = try await run(slipwayBinary, ["run", "--store", store, "--mode", "lazy", lazy, "--", "/bin/sh", "-c", readAll])
            #expect(second.status == 0, "\(second.stderr)")
            #expect(second.stdout == first.stdout)
            #expect(second.stderr.contains("no lazy mount"), "\(second.stderr)")
            #expect(!FileManager.default.fileExists(atPath: "\(store)/chunks"), "the second run mounted the image lazily")
        }
        try await expectCleanedUp(scratch)
    }

    @Test func exitCodesAndSignalsComeBack() async throws {
        let scratch = try ScratchDirectory()
        let store = scratch.sub("store")
        try await RegistryProcess.withRegistry { registry in
            let (plain, lazy) = try await publish(registry, scratch)
            for runtime in ["runc", "crun"] {
                for reference in [plain, lazy] {
                    let mode = reference == lazy ? "lazy" : "unpacked"
                    let three = try await slipwayRun(store, ["--runtime", runtime, "--mode", mode, reference, "--", "/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
                    #expect(three.status == 3, "\(runtime) \(mode): \(three.stderr)")
                    #expect(three.stdout == "out\n" && three.stderr.contains("err"), "\(three.stdout) \(three.stderr)")
                    // The command is PID 1 of its PID namespace, which a signal from inside cannot kill; a shell
                    // under it that kills itself shows the status the way the command's own death would.
                    let killed = try await slipwayRun(
                        store, ["--runtime", runtime, "--mode", mode, reference, "--", "/bin/sh", "-c", "/bin/sh -c 'kill -9 $$'; exit $?"])
                    #expect(killed.status == 137, "\(runtime) \(mode): \(killed.status) \(killed.stderr)")
                    try await expectCleanedUp(scratch)
                }
                // The container's PID 1 itself killed by SIGKILL (from outside, as the OOM killer would): 128+9.
                let marker = String(30_000 + Int.random(in: 0..<9_999))
                async let outcome = slipwayRun(store, ["--runtime", runtime, plain, "--", "/bin/sleep", marker])
                let pid = try await waitForProcess(arguments: ["/bin/sleep", marker], executable: "sleep")
                kill(pid, SIGKILL)
                let result = try await outcome
                #expect(result.status == 137, "\(runtime): \(result.status) \(result.stderr)")
                try await expectCleanedUp(scratch)
            }
        }
    }

    @Test func sigtermReachesTheContainer() async throws {
        let scratch = try ScratchDirectory()
        let data = scratch.sub("data")
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        try await RegistryProcess.withRegistry { registry in
            let (plain, lazy) = try await publish(registry, scratch)
            for runtime in ["runc", "crun"] {
                for (mode, reference) in [("unpacked", plain), ("lazy", lazy)] {
                    try? FileManager.default.removeItem(atPath: "\(data)/ready")
                    let marker = "MARK=\(UUID().uuidString)"
                    let script = "trap 'echo got-term; exit 42' TERM; touch /data/ready; while true; do sleep 0.1; done"
                    async let outcome = slipwayRun(
                        scratch.sub("store"),
                        ["--runtime", runtime, "--mode", mode, "--env", marker, "--bind", "\(data):/data", reference, "--", "/bin/sh", "-c", script])
                    let slipway = try await waitForProcess(arguments: ["--env", marker], executable: "slipway")
                    try await waitForFile("\(data)/ready")
                    kill(slipway, SIGTERM)
                    let result = try await outcome
                    #expect(result.status == 42, "\(runtime) \(mode): \(result.status) \(result.stderr)")
                    #expect(result.stdout.contains("got-term"), "\(result.stdout)")
                    try await expectCleanedUp(scratch)
                }
            }
        }
    }

    /// A PID 1 without a TERM handler ignores SIGTERM; 10 s later Slipway kills the container and still cleans up,
    /// well before a scheduler's SIGKILL (Slurm's KillWait is 30 s) would stop it from doing so.
    @Test func containerIgnoringSigtermIsKilledAfterTheStopTimeout() async throws {
        let scratch = try ScratchDirectory()
        try await RegistryProcess.withRegistry { registry in
            let (plain, _) = try await publish(registry, scratch)
            for runtime in ["runc", "crun"] {
                let marker = String(40_000 + Int.random(in: 0..<9_999))
                async let outcome = slipwayRun(scratch.sub("store"), ["--runtime", runtime, plain, "--", "/bin/sleep", marker])
                _ = try await waitForProcess(arguments: ["/bin/sleep", marker], executable: "sleep")
                let slipway = try await waitForProcess(arguments: ["/bin/sleep", marker], executable: "slipway")
                let signalled = ContinuousClock.now
                kill(slipway, SIGTERM)
                let result = try await outcome
                let waited = signalled.duration(to: result.ended)
                #expect(result.status == 137, "\(runtime): \(result.status) \(result.stderr)")
                #expect(waited >= .seconds(9) && waited < .seconds(20), "\(runtime): stopped after \(waited)")
                try await expectCleanedUp(scratch)
            }
        }
    }

    @Test func bindMountsAndUserOptions() async throws {
        let scratch = try ScratchDirectory()
        let store = scratch.sub("store")
        let data = scratch.sub("data")
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        try write("input from the host\n", to: "\(data)/input.txt")
        try await RegistryProcess.withRegistry { registry in
            let (plain, lazy) = try await publish(registry, scratch)
            for runtime in ["runc", "crun"] {
                for (mode, reference) in [("unpacked", plain), ("lazy", lazy)] {
                    let written = "\(data)/from-\(runtime)-\(mode).txt"
                    let result = try await slipwayRun(
                        store,
                        [
                            "--runtime", runtime, "--mode", mode, "--bind", "\(data):/mnt/data", "--bind", "\(data):/mnt/readonly:ro", reference, "--",
                            "/bin/sh", "-c",
                            "cat /mnt/data/input.txt; echo written inside > /mnt/data/\((written as NSString).lastPathComponent); "
                                + "echo no > /mnt/readonly/denied.txt 2>/dev/null && echo writable || echo read-only",
                        ])
                    #expect(result.status == 0, "\(runtime) \(mode): \(result.stderr)")
                    #expect(result.stdout == "input from the host\nread-only\n", "\(result.stdout)")
                    #expect((try? String(contentsOfFile: written, encoding: .utf8)) == "written inside\n")
                    #expect(!FileManager.default.fileExists(atPath: "\(data)/denied.txt"))
                    try await expectCleanedUp(scratch)
                }
            }
            // --env, --workdir and a named user resolved from the image's /etc/passwd and /etc/group.
            let user = try await slipwayRun(
                store,
                ["--env", "GREETING=hi there", "--env", "PATH=/bin", "--workdir", "/tmp", "--user", "tester", plain, "--", "/bin/sh", "-c",
                 "echo \"$GREETING\"; echo $PATH; pwd; id -u; id -g; id -G; echo $HOME"])
            #expect(user.status == 0, "\(user.stderr)")
            #expect(user.stdout.hasPrefix("hi there\n/bin\n/tmp\n1000\n1000\n1000 2000\n/home/tester\n"), "\(user.stdout)")
            // A bare --env NAME passes this process's value on (as docker does), and nothing when it is unset.
            let passed = try await run(
                slipwayBinary, ["run", "-q", "--store", store, "--env", "SLW_FROM_HOST", "--env", "SLW_NOT_SET", plain, "--", "/bin/sh", "-c",
                                "echo \"$SLW_FROM_HOST\"; echo \"${SLW_NOT_SET-unset}\""],
                environment: ["SLW_FROM_HOST": "rank 7"])
            #expect(passed.stdout == "rank 7\nunset\n", "\(passed.stdout) \(passed.stderr)")
            let numeric = try await slipwayRun(store, ["--user", "1234:5678", plain, "--", "/bin/sh", "-c", "id -u; id -g"])
            #expect(numeric.stdout == "1234\n5678\n", "\(numeric.stdout) \(numeric.stderr)")
            let unknown = try await slipwayRun(store, ["--user", "nobody-here", plain, "--", "/bin/true"])
            #expect(unknown.status == 1 && unknown.stderr.contains("no user 'nobody-here'"), "\(unknown.stderr)")
            try await expectCleanedUp(scratch)
        }
    }

    @Test func clearErrorsLeaveNothingBehind() async throws {
        let scratch = try ScratchDirectory()
        let store = scratch.sub("store")
        try await RegistryProcess.withRegistry { registry in
            let (plain, lazy) = try await publish(registry, scratch)
            for (mode, reference) in [("unpacked", plain), ("lazy", lazy)] {
                let missing = "/nonexistent-\(UUID().uuidString)"
                let result = try await slipwayRun(store, ["--mode", mode, "--bind", "\(missing):/data", reference, "--", "/bin/true"])
                #expect(result.status == 1 || result.status == 2, "\(result.status)")
                #expect(result.stderr.contains(missing) && result.stderr.contains("does not exist"), "\(result.stderr)")
                try await expectCleanedUp(scratch)
            }
            for name in ["crun", "runc"] {
                let result = try await slipwayRun(store, ["--runtime", "/nonexistent/\(name)", plain, "--", "/bin/true"])
                #expect(result.status == 1, "\(result.status)")
                #expect(result.stderr.contains("Debian package \(name)") && result.stderr.contains("apt-get install \(name)"), "\(result.stderr)")
            }
            let badBind = try await slipwayRun(store, ["--bind", "/tmp:relative", plain, "--", "/bin/true"])
            #expect(badBind.status == 2 && badBind.stderr.contains("absolute"), "\(badBind.stderr)")
            let noCommand = try await slipwayRun(store, [plain])
            #expect(noCommand.status == 1 && noCommand.stderr.contains("no Entrypoint or Cmd"), "\(noCommand.stderr)")
            let noImage = try await slipwayRun(store, ["--", "/bin/true"])
            #expect(noImage.status == 2, "\(noImage.stderr)")
            try await expectCleanedUp(scratch)
        }
    }

    @Test func aRunWhoseSlipwayWasKilledIsCleanedUpByTheNext() async throws {
        let scratch = try ScratchDirectory()
        let store = scratch.sub("store")
        try await RegistryProcess.withRegistry { registry in
            let (plain, _) = try await publish(registry, scratch)
            let marker = String(40_000 + Int.random(in: 0..<9_999))
            async let orphaned = slipwayRun(store, ["--runtime", "runc", "--env", "MARK=\(marker)", plain, "--", "/bin/sleep", marker])
            let container = try await waitForProcess(arguments: ["/bin/sleep", marker], executable: "sleep")
            let slipway = try await waitForProcess(arguments: ["--env", "MARK=\(marker)"], executable: "slipway")
            kill(slipway, SIGKILL)
            #expect(try await orphaned.status == 128 + SIGKILL)
            #expect(!(try FileManager.default.contentsOfDirectory(atPath: "\(store)/run")).isEmpty)
            // The next run finds the dead run: stops its container, unmounts and removes its directory.
            let next = try await slipwayRun(store, [plain, "--", "/bin/true"])
            #expect(next.status == 0, "\(next.stderr)")
            try await waitUntilGone(container)
            try await expectCleanedUp(scratch)
        }
    }

    @Test func aSignalBeforeTheContainerStartsCleansUp() async throws {
        let scratch = try ScratchDirectory()
        let store = scratch.sub("store")
        try await withRegistryAndProxy { _, proxy in
            let (_, lazy) = try await publish(proxy.host, scratch)
            let image = try await withSession(try makeSession()) { session in
                try await session.source(for: try ImageLocation(parsing: lazy)).resolve()
            }
            // The layers stall: the lazy mount is being set up (run directory made, a layer asked for) when SIGTERM
            // arrives.
            for layer in image.manifest.layers { proxy.inject(.stall(seconds: 120), path: "/blobs/\(layer.digest)", times: .max) }
            let marker = "MARK=\(UUID().uuidString)"
            async let outcome = slipwayRun(store, ["--mode", "lazy", "--prefetch", "none", "--env", marker, lazy, "--", "/bin/true"])
            let slipway = try await waitForProcess(arguments: ["--env", marker], executable: "slipway")
            try await waitUntil("a run directory exists and a layer is being fetched") {
                !((try? FileManager.default.contentsOfDirectory(atPath: "\(store)/run")) ?? []).isEmpty
                    && image.manifest.layers.contains { !proxy.requests(matching: "/blobs/\($0.digest)", method: "GET").isEmpty }
            }
            let signalled = ContinuousClock.now
            kill(slipway, SIGTERM)
            let result = try await outcome
            #expect(result.status == 128 + SIGTERM, "\(result.status): \(result.stderr)")
            #expect(result.ended - signalled < .seconds(30))
            proxy.removeAllRules()
            try await expectCleanedUp(scratch)
        }
    }

    @Test(.enabled(if: sifConversionAvailable, "needs slipway convert --to sif and squashfs-tools"))
    func aSIFAndAnOCISIFRunUnderBothRuntimes() async throws {
        let scratch = try ScratchDirectory()
        let store = scratch.sub("store")
        try await RegistryProcess.withRegistry { registry in
            let (plain, _) = try await publish(registry, scratch)
            let expected = try await slipwayRun(store, ["--runtime", "runc", plain, "--", "/bin/sh", "-c", Self.probe])
            #expect(expected.status == 0, "\(expected.stderr)")
            for format in ["sif", "oci-sif"] {
                let sif = scratch.sub("tools.\(format)")
                let converted = try await run(slipwayBinary, ["convert", "-q", "--store", scratch.sub("sif-store"), plain, sif, "--to", format])
                try #require(converted.status == 0, "convert: \(converted.stderr)")
                if format == "oci-sif" {
                    // SingularityCE's layout: the index as the root, each layer a squashfs blob beside the config
                    // and manifest. Debian's siftool (sif 2.8) reads the file but predates the OCI object types.
                    let listed = try await runChecked("siftool", ["list", sif]).stdout
                    #expect(listed.components(separatedBy: "|Unknown").count - 1 == 5, "\(listed)")
                    let file = try SIFFile(path: sif)
                    #expect(file.objects(ofType: .ociRootIndex).count == 1 && file.objects(ofType: .ociBlob).count == 4)
                }
                for runtime in ["runc", "crun"] {
                    // No reference: the config (PATH, working directory) comes from the SIF's oci-config.json.
                    let result = try await slipwayRun(store, ["--runtime", runtime, "--mode", "sif", "--sif", sif, "--", "/bin/sh", "-c", Self.probe])
                    #expect(result.status == 0, "\(runtime): \(result.stderr)")
                    #expect(result.stdout == expected.stdout, "\(runtime) sif:\n\(result.stdout)\nunpacked:\n\(expected.stdout)")
                    let three = try await slipwayRun(store, ["--runtime", runtime, "--sif", sif, "--", "/bin/sh", "-c", "exit 3"])
                    #expect(three.status == 3, "\(runtime): \(three.stderr)")
                    try await expectCleanedUp(scratch)
                }
                #expect(try SIFImageConfig.read(sif)?.Env?.contains { $0.hasPrefix("PATH=") } == true)
            }
        }
        try await expectCleanedUp(scratch)
    }

    /// The bundle's spec, checked without running anything.
    @Test func theBundleFollowsTheImageConfigAndTheOptions() throws {
        let scratch = try ScratchDirectory()
        let rootfs = scratch.sub("rootfs")
        for directory in ["etc", "proc", "dev", "sys"] {
            try FileManager.default.createDirectory(atPath: "\(rootfs)/\(directory)", withIntermediateDirectories: true)
        }
        try write("root:x:0:0:root:/root:/bin/sh\napp:x:500:600:app:/srv/app:/bin/sh\n", to: "\(rootfs)/etc/passwd")
        try write("root:x:0:\napp:x:600:\nvideo:x:44:app\n", to: "\(rootfs)/etc/group")
        let data = scratch.sub("data")
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        var image = ImageConfig.ContainerConfig(
            Env: ["PATH=/opt/bin:/bin", "MODE=image"], Entrypoint: ["/entry"], Cmd: ["default", "args"], WorkingDir: "/work")
        image.User = "app"
        let options = RunConfiguration(
            command: ["given"], environment: ["MODE=user", "EXTRA=1"], binds: [try BindMount(parsing: "\(data):/data:ro")])
        let bundle = try RuntimeBundle.write(
            to: scratch.sub("bundle"), image: image, options: options, rootfs: rootfs, readOnlyRootfs: false, identity: .root, containerID: "c1")
        let spec = try JSONDecoder().decode(RuntimeSpec.self, from: Data(contentsOf: URL(fileURLWithPath: bundle.configPath)))
        #expect(spec.ociVersion == "1.0.2" && spec.hostname == "slipway" && !spec.process.terminal && spec.process.noNewPrivileges)
        #expect(spec.process.args == ["/entry", "given"])
        #expect(spec.process.env == ["PATH=/opt/bin:/bin", "MODE=user", "EXTRA=1", "HOME=/srv/app"])
        #expect(spec.process.cwd == "/work")
        #expect(spec.process.user == RuntimeSpec.User(uid: 500, gid: 600, additionalGids: [44]))
        #expect(spec.linux.namespaces.map(\.type) == ["pid", "ipc", "uts", "mount"])
        #expect(spec.linux.cgroupsPath == "/slipway/c1" && spec.linux.uidMappings == nil)
        #expect(spec.mounts.map(\.destination).starts(with: ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"]))
        #expect(spec.mounts.last == RuntimeSpec.Mount(destination: "/data", type: "bind", source: data, options: ["rbind", "ro", "nosuid", "nodev"]))

        let rootless = try RuntimeBundle.makeSpec(
            image: image, options: RunConfiguration(user: "0"), rootfs: rootfs, readOnlyRootfs: true, identity: .rootless(hostUID: 1001, hostGID: 1002),
            containerID: "c2", users: UserResolver(rootfs: rootfs))
        #expect(rootless.linux.namespaces.map(\.type).contains("user") && rootless.linux.cgroupsPath == nil && rootless.linux.resources == nil)
        #expect(rootless.linux.uidMappings == [RuntimeSpec.IDMapping(containerID: 0, hostID: 1001, size: 1)])
        #expect(rootless.linux.gidMappings == [RuntimeSpec.IDMapping(containerID: 0, hostID: 1002, size: 1)])
        #expect(rootless.root.readonly && rootless.process.args == ["/entry", "default", "args"])
        #expect(throws: RuntimeError.self) {
            try RuntimeBundle.makeSpec(
                image: nil, options: RunConfiguration(command: ["x"], binds: [BindMount(source: data, destination: "/missing")]), rootfs: rootfs,
                readOnlyRootfs: true, identity: .root, containerID: "c3", users: UserResolver(rootfs: rootfs))
        }
        try FileManager.default.removeItem(atPath: "\(rootfs)/proc")
        #expect(throws: RuntimeError.self) {
            try RuntimeBundle.makeSpec(
                image: nil, options: RunConfiguration(command: ["x"]), rootfs: rootfs, readOnlyRootfs: true, identity: .root, containerID: "c4",
                users: UserResolver(rootfs: rootfs))
        }
        #expect(throws: RuntimeError.self) { try BindMount(parsing: "/nonexistent-\(UUID().uuidString):/data").checkSource() }

        // This host's cgroups are hybrid: crun gets the private-namespace workaround, runc is the default.
        if CgroupLayout.crunRefuses() {
            #expect(try OCIRuntime.locate("crun").hidesHybridCgroups)
            #expect(try OCIRuntime.locate().kind == .runc)
        }
        #expect(throws: RuntimeError.self) { try OCIRuntime.locate("/nonexistent/crun") }
    }

    /// Overlay options that do not fit in the kernel's page are passed relative to a base directory.
    @Test func anOverlayOfManyLongPathsMounts() async throws {
        let scratch = try ScratchDirectory()
        let base = scratch.sub(String(repeating: "a-long-directory-name-", count: 8))
        var lowers: [String] = []
        for index in 0..<24 {
            let lower = "\(base)/\(String(repeating: "layer-with-a-long-name-", count: 4))\(index)"
            try FileManager.default.createDirectory(atPath: lower, withIntermediateDirectories: true)
            try write("\(index)\n", to: "\(lower)/file-\(index)")
            try write("\(index)\n", to: "\(lower)/shared")
            lowers.insert(lower, at: 0)
        }
        #expect(lowers.joined(separator: ":").utf8.count > 4096)
        let (upper, work, merged) = ("\(base)/upper", "\(base)/work", "\(base)/merged")
        for directory in [upper, work, merged] { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        try await Mounts.overlay(lowers: lowers, upper: upper, work: work, at: merged, base: base)
        #expect(Mounts.isMountpoint(merged))
        #expect(try FileManager.default.contentsOfDirectory(atPath: merged).count == 25)
        #expect(try String(contentsOfFile: "\(merged)/shared", encoding: .utf8) == "23\n")
        #expect(Mounts.unmount(merged))
        try await expectCleanedUp(scratch)
        await #expect(throws: RuntimeError.self) { try await Mounts.overlay(lowers: lowers, upper: upper, work: work, at: merged) }
    }

    // MARK: Helpers

    /// The pid of a process whose command line contains `arguments` in order (and whose executable's name is
    /// `executable`, when given), waiting for it to appear.
    func waitForProcess(arguments: [String], executable: String? = nil, timeout: Duration = .seconds(60)) async throws -> pid_t {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
                guard let pid = pid_t(entry), pid != getpid(),
                    let raw = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"), !raw.isEmpty
                else { continue }
                let argv = raw.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
                if let executable, (argv.first.map { ($0 as NSString).lastPathComponent } ?? "") != executable { continue }
                let joined = "\u{0}" + argv.joined(separator: "\u{0}") + "\u{0}"
                if joined.contains("\u{0}" + arguments.joined(separator: "\u{0}") + "\u{0}") { return pid }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ProcessWaitTimeout(what: arguments.joined(separator: " "))
    }

    func waitForFile(_ path: String, timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        while !FileManager.default.fileExists(atPath: path) {
            guard ContinuousClock.now < deadline else { throw ProcessWaitTimeout(what: path) }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    func waitUntilGone(_ pid: pid_t, timeout: Duration = .seconds(20)) async throws {
        let deadline = ContinuousClock.now + timeout
        while kill(pid, 0) == 0 {
            guard ContinuousClock.now < deadline else { throw ProcessWaitTimeout(what: "pid \(pid) to exit") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    struct ProcessWaitTimeout: Error { var what: String }
}
