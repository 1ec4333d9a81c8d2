import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

let slurmTestsEnabled = benchTestsEnabled
    && ["/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/sbatch", "/usr/sbin/munged"].allSatisfy(FileManager.default.isExecutableFile)

/// Slurm jobs on a real two-node cluster (`scripts/cluster`: munge, slurmctld, a slurmd per network namespace), the
/// ETL images behind a registry host and the cluster's `slipway serve` cache, a store on the shared directory.
@Suite(.tags(.integration, .slow), .enabled(if: slurmTestsEnabled, "needs root, Slurm (slurm-wlm), munge and what the bench tests need"), .serialized)
struct SlurmTests {
    static let directory = "/var/tmp/slipway-test-cluster"
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// A cluster for one test: up on creation, down (and checked clean) at the end.
    final class Cluster: @unchecked Sendable {
        let environment: [String: String]
        let shared = SlurmTests.directory + "/shared"
        private let registry: ChildProcess
        private(set) var cache: RunningCache

        static func start(nodes: Int, link: String = "none") async throws -> Cluster {
            _ = try? await run("\(SlurmTests.repository)/scripts/cluster", ["down", "--dir", SlurmTests.directory])
            let log = SlurmTests.directory + ".up.log"
            // The SPANK plugin is built from slurm/ and runs this build's slipway.
            let status = try await runShellCommand(
                "'\(SlurmTests.repository)/scripts/cluster' up --nodes \(nodes) --link \(link) --dir '\(SlurmTests.directory)' "
                    + "--slipway '\(slipwayBinary)' </dev/null >'\(log)' 2>&1")
            guard status == 0 else {
                throw TestSupportError("scripts/cluster up failed:\n\(((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").suffix(3000))")
            }
            // A cold cache and empty stores: the upstream bytes are what this test moved.
            for stale in ["cache", "cache.access.log", "shared/store", "shared/full-store"] {
                try? FileManager.default.removeItem(atPath: "\(SlurmTests.directory)/\(stale)")
            }
            // The ETL images (built by the bench tests' work directory) from a registry on the registry host.
            let images = try await run(slipwayBinary, ["bench", "images", "--sizes", "", "--versions", "2", "--work", BenchTests.work])
            guard images.status == 0 else { throw TestSupportError("slipway bench images failed:\n\(images.stderr.suffix(2000))") }
            let config = SlurmTests.directory + "/registry.yml"
            try """
                version: 0.1
                storage: {filesystem: {rootdirectory: \(BenchTests.work)/registry}}
                http: {addr: 10.78.1.1:5000}
                log: {level: error}
                """.write(toFile: config, atomically: true, encoding: .utf8)
            let registry = try ChildProcess("/usr/sbin/ip", ["netns", "exec", "slwcl-reg", "docker-registry", "serve", config])
            let cache = try await startCache()
            let environment = try await run("\(SlurmTests.repository)/scripts/cluster", ["env", "--dir", SlurmTests.directory]).stdout
            var values: [String: String] = [:]
            for line in environment.split(separator: "\n") where line.hasPrefix("export ") {
                let assignment = line.dropFirst("export ".count).split(separator: "=", maxSplits: 1)
                values[String(assignment[0])] = String(assignment[1]).trimmingCharacters(in: CharacterSet(charactersIn: "'\""))
            }
            values["SLIPWAY"] = slipwayBinary
            return Cluster(environment: values, registry: registry, cache: cache)
        }

        static func startCache() async throws -> RunningCache {
            try await RunningCache(upstream: "http://10.78.1.1:5000", root: SlurmTests.directory + "/cache", options: [], listen: "10.78.0.1:5050")
        }

        /// Kills the cache (SIGKILL: every transfer through it is cut) and starts it again on the same store.
        func restartCache() async throws {
            await cache.crash()
            cache = try await Cluster.startCache()
        }

        private init(environment: [String: String], registry: ChildProcess, cache: RunningCache) {
            self.environment = environment
            self.registry = registry
            self.cache = cache
        }

        func shell(_ script: String, extra: [String: String] = [:]) async throws -> ProcessResult {
            try await run("/bin/bash", ["-c", script], environment: environment.merging(extra) { $1 })
        }

        /// Stops everything and returns what was left behind: mounts under the cluster directory, Slipway or Slurm
        /// processes, the plugin's containers, namespaces.
        func stop() async throws -> [String] {
            await cache.stop()
            registry.signal(SIGTERM)
            await registry.exitStatus()
            let down = try await run("\(SlurmTests.repository)/scripts/cluster", ["down", "--dir", SlurmTests.directory])
            var left: [String] = down.status == 0 ? [] : ["scripts/cluster down failed: \(down.stderr.suffix(500))"]
            let mounts = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
            left += mounts.split(separator: "\n").map { String($0.split(separator: " ")[4]) }.filter { $0.hasPrefix(SlurmTests.directory) }
            let processes = try await run("/usr/bin/pgrep", ["-a", "-f", "slurmd|slurmctld|\(SlurmTests.directory)"]).stdout
            left += processes.split(separator: "\n").map(String.init).filter { !$0.contains("pgrep") }
            let namespaces = try await run("/usr/sbin/ip", ["netns", "list"]).stdout
            left += namespaces.split(separator: "\n").map(String.init).filter { $0.hasPrefix("slwcl") }
            left += try await SlurmTests.pluginLeftovers()
            return left
        }
    }

    /// Runs `body` on a new cluster, then stops it; unless `body` failed, nothing may be left behind.
    func withCluster(nodes: Int, link: String = "none", _ body: (Cluster) async throws -> Void) async throws {
        let cluster = try await Cluster.start(nodes: nodes, link: link)
        do {
            try await body(cluster)
        } catch {
            _ = try? await cluster.stop()
            throw error
        }
        #expect(try await cluster.stop() == [])
    }

    /// The example batch script: one worker per node in the image through the plugin; through the cache and the
    /// shared store the image crosses the registry link once.
    @Test func etlBatchJobOnTwoNodesFetchesTheImageOnce() async throws {
        try await withCluster(nodes: 2) { cluster in
            let data = try SlurmTests.makeETLData(in: cluster.shared)
            let job = try await cluster.shell(
                "cd \(cluster.shared) && sbatch --wait -N2 --output=\(cluster.shared)/etl.out \(SlurmTests.repository)/examples/slurm/etl.sbatch",
                extra: ["IMAGE": "10.78.0.1:5050/etl:v1", "DATA": data, "STORE": cluster.shared + "/store"])
            let output = (try? String(contentsOfFile: cluster.shared + "/etl.out", encoding: .utf8)) ?? ""
            #expect(job.status == 0, "sbatch: \(job.stderr)\n\(output)")
            #expect(output.components(separatedBy: "v1: 10000 rows from 2 shards").count - 1 == 2, "one worker per node:\n\(output)")
            // Every task keeps its own result, stamped with its rank and node.
            var nodes: Set<String> = []
            for rank in 0..<2 {
                let result = try Data(contentsOf: URL(fileURLWithPath: "\(data)/results/v1.task-\(rank).json"))
                let summary = try #require(try JSONSerialization.jsonObject(with: result) as? [String: Any])
                #expect(summary["task"] as? Int == rank && summary["rows"] as? Int == 10000, "\(summary)")
                nodes.insert(summary["node"] as? String ?? "")
            }
            #expect(nodes == ["node1", "node2"])
            // One upstream fetch of every blob, however many nodes: the image plus its manifest and config.
            let upstream = try await cluster.cache.metric("slipway_cache_upstream_bytes_total")
            let inspect = try await run(slipwayBinary, ["inspect", "--json", "--plain-http", "10.78.0.1:5050/etl:v1"])
            let image = try #require(try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any])
            let layers = try #require(image["totalSize"] as? Int)
            #expect(upstream >= Int64(layers) && upstream < Int64(layers) + 64 * 1024, "upstream \(upstream) bytes for a \(layers)-byte image")
        }
    }

    /// What the plugin can leave on the machine: its runtime containers, its supervisors, mounts under its node
    /// directories.
    static func pluginLeftovers() async throws -> [String] {
        var left = try await run("/usr/sbin/runc", ["list", "-q"]).stdout.split(separator: "\n").map(String.init).filter { $0.hasPrefix("slipway-slurm-") }
        left += try await run("/usr/bin/pgrep", ["-a", "-f", "slipway slurm container"]).stdout.split(separator: "\n").map(String.init)
            .filter { !$0.contains("pgrep") }
        let mounts = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        left += mounts.split(separator: "\n").map { String($0.split(separator: " ")[4]) }.filter { $0.hasPrefix(SlurmTests.directory + "/slipway-run") }
        return left
    }

    /// Waits until a step's containers are gone (the plugin removes them as the step ends) and returns what is left.
    func leftoversAfterSteps() async throws -> [String] {
        var left: [String] = []
        let deadline = Date().addingTimeInterval(60)
        repeat {
            left = try await SlurmTests.pluginLeftovers()
            let states = (try? FileManager.default.subpathsOfDirectory(atPath: SlurmTests.directory + "/slipway-run")) ?? []
            left += states.filter { $0.split(separator: "/").count >= 3 }.map { "state \($0)" }
            if !left.isEmpty { try await Task.sleep(for: .milliseconds(200)) }
        } while !left.isEmpty && Date() < deadline
        return left
    }

    /// `srun --container-image` runs the command in the image on every node, as the submitting user; `scancel` of a
    /// job whose image is mounted lazily on both nodes leaves no mounts, containers or processes.
    @Test func pluginRunsOnEveryNodeAndScancelLeavesNothing() async throws {
        try await withCluster(nodes: 2) { cluster in
            let ran = try await cluster.shell("cd /tmp && srun -N2 --container-image=10.78.0.1:5050/etl:v2 cat /version.txt")
            #expect(ran.status == 0, "\(ran.stderr)")
            #expect(ran.stdout.split(separator: "\n") == ["v2", "v2"], "\(ran.stdout)")
            // The task is Slurm's own process in the image's filesystem, with the job's environment and the image's PATH.
            let inside = try await cluster.shell(
                "cd /tmp && srun -N1 --container-image=10.78.0.1:5050/etl:v2 --container-workdir=/app sh -c 'echo $SLURM_JOB_ID $PATH; pwd; ls /proc/$$ >/dev/null && echo host-pid'")
            #expect(inside.status == 0, "\(inside.stderr)")
            let lines = inside.stdout.split(separator: "\n").map(String.init)
            #expect(lines.count == 3 && lines[0].hasSuffix(" /usr/local/bin:/usr/bin:/bin") && lines[1] == "/app" && lines[2] == "host-pid", "\(lines)")
            #expect(try await leftoversAfterSteps() == [])

            let submitted = try await cluster.shell(
                "cd \(cluster.shared) && sbatch --parsable -N2 --output=\(cluster.shared)/sleep.out --wrap "
                    + "'srun --container-image=10.78.0.1:5050/etl:v2-esgz --container-mode=lazy sleep 600'")
            let jobID = submitted.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(submitted.status == 0 && !jobID.isEmpty, "\(submitted.stderr)")
            // Both nodes have the image mounted: a lazy mount and an overlay each, under the plugin's node directories.
            try await waitUntil("both nodes have the image mounted", timeout: .seconds(120)) {
                let mounts = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
                return mounts.split(separator: "\n").filter { $0.split(separator: " ")[4].hasPrefix(SlurmTests.directory + "/slipway-run") }.count >= 4
            }
            try await waitUntil("the tasks run", timeout: .seconds(60)) {
                try await run("/usr/bin/pgrep", ["-x", "-f", "/usr/bin/sleep 600"]).stdout.split(separator: "\n").count == 2
            }
            _ = try await cluster.shell("scancel \(jobID)")
            #expect(try await leftoversAfterSteps() == [], "left after scancel")
            #expect(try await run("/usr/bin/pgrep", ["-f", "sleep 600"]).stdout.isEmpty)
        }
    }

    /// The tasks run as the submitting user; with `--container-remap-root` they are root in a user namespace that
    /// maps only that user.
    @Test func tasksRunAsTheSubmittingUserOrRemappedToRoot() async throws {
        try await withCluster(nodes: 1) { cluster in
            let user = try await SlurmTests.testUser()
            let uid = try await run("/usr/bin/id", ["-u", user]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let asUser = "cd /tmp && setpriv --reuid=\(user) --regid=\(user) --clear-groups env HOME=/nonexistent srun -N1 --container-image=10.78.0.1:5050/etl:v1"
            let plain = try await cluster.shell(asUser + " sh -c 'id -u; cat /version.txt'")
            #expect(plain.status == 0 && plain.stdout == "\(uid)\nv1\n", "\(plain.stdout) \(plain.stderr)")
            let remapped = try await cluster.shell(asUser + " --container-remap-root sh -c 'id -u; cat /proc/self/uid_map'")
            let fields = remapped.stdout.split(whereSeparator: \.isWhitespace).map(String.init)
            #expect(remapped.status == 0 && fields == ["0", "0", uid, "1"], "\(remapped.stdout) \(remapped.stderr)")
            #expect(try await leftoversAfterSteps() == [])
        }
    }

    /// A slurmstepd that dies (SIGKILL: a crashed daemon, as in a node failure) cannot run the plugin's exit
    /// callback: the container's supervisor, which watches it, removes the container, its mounts and files, and the
    /// job's end takes what is left.
    @Test func aContainerWhoseSlurmstepdDiesIsRemovedByItsSupervisor() async throws {
        try await withCluster(nodes: 1) { cluster in
            let submitted = try await cluster.shell(
                "cd \(cluster.shared) && sbatch --parsable -N1 --output=/dev/null --wrap 'srun --container-image=10.78.0.1:5050/etl:v1 sleep 600'")
            let job = submitted.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(submitted.status == 0, "\(submitted.stderr)")
            try await waitUntil("the step's container is up", timeout: .seconds(120)) {
                try await run("/usr/bin/pgrep", ["-x", "-f", "/usr/bin/sleep 600"]).stdout.contains(where: \.isNumber)
            }
            let stepd = try await run("/usr/bin/pgrep", ["-f", "slurmstepd: \\[\(job).0\\]"]).stdout.split(separator: "\n").first
            let pid = try #require(stepd.flatMap { pid_t($0) }, "no slurmstepd for step \(job).0")
            #expect(try await SlurmTests.pluginLeftovers().count >= 2, "a supervisor, a runtime container, a mount")
            kill(pid, SIGKILL)
            try await waitUntil("the supervisor removed the container", timeout: .seconds(60)) { try await SlurmTests.pluginLeftovers() == [] }
            _ = try await cluster.shell("scancel \(job)")
            _ = try await run("/usr/bin/pkill", ["-x", "-f", "/usr/bin/sleep 600"])
            #expect(try await leftoversAfterSteps() == [])
        }
    }

    /// A user of the machine's passwd for the tests that need one who is not root.
    static func testUser() async throws -> String {
        let user = "slipway-slurm-test"
        if try await run("/usr/bin/id", [user]).status != 0 {
            let added = try await run("/usr/sbin/useradd", ["--no-create-home", "--shell", "/bin/sh", user])
            try #require(added.status == 0, "useradd: \(added.stderr)")
        }
        return user
    }

    /// `#SBATCH --container-image` runs the batch script itself in the image: the ETL worker, with the data bound in.
    @Test func batchScriptWithContainerImageRunsTheWorker() async throws {
        try await withCluster(nodes: 1) { cluster in
            let data = try SlurmTests.makeETLData(in: cluster.shared)
            let script = cluster.shared + "/etl-batch.sbatch"
            let example = try String(contentsOfFile: SlurmTests.repository + "/examples/slurm/etl-in-container.sbatch", encoding: .utf8)
            // The example, with the options as #SBATCH lines.
            try example.replacingOccurrences(
                of: "#SBATCH --job-name=etl-batch",
                with: "#SBATCH --job-name=etl-batch\n#SBATCH --container-image=10.78.0.1:5050/etl:v1\n#SBATCH --container-mounts=\(data):/shared"
            ).write(toFile: script, atomically: true, encoding: .utf8)
            let job = try await cluster.shell("cd \(cluster.shared) && sbatch --wait --output=\(cluster.shared)/batch.out \(script)")
            let output = (try? String(contentsOfFile: cluster.shared + "/batch.out", encoding: .utf8)) ?? ""
            #expect(job.status == 0, "sbatch: \(job.stderr)\n\(output)")
            #expect(output.hasPrefix("v1\n") && output.contains("v1: 10000 rows from 2 shards"), "\(output)")
            #expect(FileManager.default.fileExists(atPath: data + "/results/v1.task-0.json"))
            #expect(try await leftoversAfterSteps() == [])
        }
    }

    /// `--container-name` keeps one container for the job: the second step sees what the first wrote (the image
    /// was prepared once), a different image under the same name is refused, and the job's end removes it.
    @Test func namedContainerIsReusedByTheJobsSteps() async throws {
        try await withCluster(nodes: 1) { cluster in
            let script = """
                #!/bin/bash
                srun --container-image=10.78.0.1:5050/etl:v1 --container-name=etl sh -c 'echo written-by-step-0 >/marker; cat /version.txt'
                srun --container-name=etl cat /marker
                srun --container-image=10.78.0.1:5050/etl:v2 --container-name=etl true || echo refused
                """
            try script.write(toFile: cluster.shared + "/named.sh", atomically: true, encoding: .utf8)
            let job = try await cluster.shell("cd \(cluster.shared) && sbatch --wait -N1 --output=\(cluster.shared)/named.out named.sh")
            let output = (try? String(contentsOfFile: cluster.shared + "/named.out", encoding: .utf8)) ?? ""
            #expect(job.status == 0, "\(job.stderr)")
            let lines = output.split(separator: "\n").map(String.init)
            #expect(lines.first == "v1" && lines.contains("written-by-step-0") && lines.last == "refused", "\(output)")
            #expect(output.contains("was made from 10.78.0.1:5050/etl:v1, not 10.78.0.1:5050/etl:v2"), "\(output)")
            // The job epilog removed it.
            #expect(try await leftoversAfterSteps() == [])
        }
    }

    /// Slurm's own OCI path: `slipway bundle` and the oci.conf `scripts/cluster up` wrote from `slipway slurm
    /// oci-conf`; `srun --container=BUNDLE` runs in the image on both nodes.
    @Test func srunContainerRunsASlipwayBundleThroughOCIConf() async throws {
        try await withCluster(nodes: 2) { cluster in
            let bundle = cluster.shared + "/bundle-v2"
            let made = try await run(
                slipwayBinary, ["bundle", "-q", "--plain-http", "--store", cluster.shared + "/store", "10.78.0.1:5050/etl:v2", bundle])
            #expect(made.status == 0, "\(made.stderr)")
            let ran = try await cluster.shell("cd /tmp && srun -N2 --container=\(bundle) sh -c 'cat /version.txt; test -w / || echo read-only'")
            #expect(ran.status == 0, "\(ran.stderr)")
            #expect(ran.stdout.split(separator: "\n").sorted() == ["read-only", "read-only", "v2", "v2"], "\(ran.stdout)")
            // --remove deletes only what slipway bundle made.
            let foreign = cluster.shared + "/not-a-bundle"
            try FileManager.default.createDirectory(atPath: foreign, withIntermediateDirectories: true)
            let refused = try await run(slipwayBinary, ["bundle", "--remove", foreign])
            #expect(refused.status != 0 && refused.stderr.contains("is not a bundle slipway made") && FileManager.default.fileExists(atPath: foreign))
            let removed = try await run(slipwayBinary, ["bundle", "--remove", bundle])
            #expect(removed.status == 0 && !FileManager.default.fileExists(atPath: bundle), "\(removed.stderr)")
        }
    }

    /// A step that must fail before any task starts: its command (which would leave a file) never runs, srun says
    /// why, and nothing is left mounted or running.
    func expectStepFails(
        _ cluster: Cluster, _ options: String, saying message: String, user: String? = nil, environment: [String: String] = [:]
    ) async throws {
        let marks = cluster.shared + "/marks"
        try FileManager.default.createDirectory(atPath: marks, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o1777])
        let srun = "srun -N2 \(options) sh -c 'touch \(marks)/ran-$SLURM_PROCID'"
        let command = "cd /tmp && " + (user.map { "setpriv --reuid=\($0) --regid=\($0) --clear-groups env HOME=/nonexistent \(srun)" } ?? srun)
        let result = try await cluster.shell(command, extra: environment)
        #expect(result.status != 0, "\(options): the step succeeded")
        #expect(result.stderr.contains(message), "\(options): srun said:\n\(result.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: marks) == [], "\(options): a task ran")
        #expect(try await leftoversAfterSteps() == [], "\(options)")
    }

    @Test func anImageThatDoesNotExistFailsTheStepWithTheRegistrysMessage() async throws {
        try await withCluster(nodes: 2) { cluster in
            try await expectStepFails(cluster, "--container-image=10.78.0.1:5050/etl:no-such-tag", saying: "manifest unknown")
        }
    }

    @Test func aMountSourceThatDoesNotExistFailsTheStep() async throws {
        try await withCluster(nodes: 2) { cluster in
            try await expectStepFails(
                cluster, "--container-image=10.78.0.1:5050/etl:v1 --container-mounts=/var/tmp/no-such-directory:/data",
                saying: "the mount source /var/tmp/no-such-directory does not exist")
        }
    }

    @Test func anOptionGivenTwiceWithDifferentValuesIsRefused() async throws {
        try await withCluster(nodes: 2) { cluster in
            try await expectStepFails(
                cluster, "--container-image=10.78.0.1:5050/etl:v1 --container-image=10.78.0.1:5050/etl:v2",
                saying: "--container-image given twice with different values")
        }
    }

    /// A private image (a registry with htpasswd auth): root, with credentials, runs it and so puts it in the
    /// shared store; a user who cannot read those credentials is told so, and a user without credentials gets the
    /// registry's refusal although the store has the image.
    @Test func aUserWithoutAccessToThePrivateImagesCredentialsCannotRunIt() async throws {
        try await withCluster(nodes: 2) { cluster in
            let user = try await SlurmTests.testUser()
            let htpasswd = try await run("/usr/bin/htpasswd", ["-Bbn", "alice", "s3cret"])
            try #require(htpasswd.status == 0, "htpasswd (apache2-utils): \(htpasswd.stderr)")
            let auth = SlurmTests.directory + "/private"
            try? FileManager.default.removeItem(atPath: auth)
            try FileManager.default.createDirectory(atPath: auth + "/docker", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try htpasswd.stdout.write(toFile: auth + "/htpasswd", atomically: true, encoding: .utf8)
            try """
                version: 0.1
                storage: {filesystem: {rootdirectory: \(BenchTests.work)/registry}}
                http: {addr: 10.78.1.1:5001}
                auth: {htpasswd: {realm: private, path: \(auth)/htpasswd}}
                log: {level: error}
                """.write(toFile: auth + "/registry.yml", atomically: true, encoding: .utf8)
            let registry = try ChildProcess("/usr/sbin/ip", ["netns", "exec", "slwcl-reg", "docker-registry", "serve", auth + "/registry.yml"])
            defer { registry.signal(SIGTERM) }
            try await waitUntil("the private registry answers") {
                try await run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://10.78.1.1:5001/v2/"]).stdout == "401"
            }
            let token = Data("alice:s3cret".utf8).base64EncodedString()
            try #"{"auths": {"10.78.1.1:5001": {"auth": "\#(token)"}}}"#.write(toFile: auth + "/docker/config.json", atomically: true, encoding: .utf8)
            let image = "10.78.1.1:5001/etl:v1"
            let owner = try await cluster.shell(
                "cd /tmp && srun -N2 --container-image=\(image) cat /version.txt", extra: ["DOCKER_CONFIG": auth + "/docker"])
            #expect(owner.status == 0 && owner.stdout.split(separator: "\n") == ["v1", "v1"], "with credentials: \(owner.stderr)")
            try await expectStepFails(
                cluster, "--container-image=\(image)", saying: "cannot read your registry credentials \(auth)/docker/config.json: Permission denied",
                user: user, environment: ["DOCKER_CONFIG": auth + "/docker"])
            try await expectStepFails(cluster, "--container-image=\(image)", saying: "authentication required", user: user)
            registry.signal(SIGTERM)
            await registry.exitStatus()
        }
    }

    /// A node whose store is full: the pull fails with the filesystem's error, nothing runs, nothing is left mounted.
    @Test func aFullStoreFailsTheStepAndLeavesNothingMounted() async throws {
        try await withCluster(nodes: 2) { cluster in
            let full = cluster.shared + "/full-store"
            try FileManager.default.createDirectory(atPath: full, withIntermediateDirectories: true)
            let mounted = try await run("/bin/mount", ["-t", "tmpfs", "-o", "size=16m", "slipway-full-store", full])
            try #require(mounted.status == 0, "\(mounted.stderr)")
            defer { detachMount(full) }
            // The site allows this store (the plugin's line, which `scripts/slurm-plugin install` wrote, is read at
            // each launch).
            let plugstack = SlurmTests.directory + "/etc/plugstack.conf.d/slipway.conf"
            let line = try String(contentsOfFile: plugstack, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            try (line + " stores=\(full)\n").write(toFile: plugstack, atomically: true, encoding: .utf8)
            try await expectStepFails(
                cluster, "--container-image=10.78.0.1:5050/etl:v1 --container-store=\(full)", saying: "No space left on device")
            // A store the site did not allow is refused before anything is fetched.
            try await expectStepFails(
                cluster, "--container-image=10.78.0.1:5050/etl:v1 --container-store=/etc", saying: "--container-store /etc is not one of the stores")
            _ = try await run("/bin/umount", [full])
        }
    }

    static func makeETLData(in shared: String) throws -> String {
        let data = shared + "/etl"
        try? FileManager.default.removeItem(atPath: data)
        try FileManager.default.createDirectory(atPath: data + "/data", withIntermediateDirectories: true)
        for shard in 0..<2 {
            let rows = (0..<5000).map { "\($0),R\($0 % 24),P\($0 % 400),\($0 % 9 + 1),\(Double($0 % 500) + 0.5)" }
            try ("order_id,region,product,quantity,amount\n" + rows.joined(separator: "\n") + "\n")
                .write(toFile: "\(data)/data/shard-\(shard).csv", atomically: true, encoding: .utf8)
        }
        return data
    }

    /// Two images launched at once on overlapping nodes over a slow link, and the cache killed and restarted in
    /// the middle: both launches complete (the nodes' pulls retry and resume), each node runs what it was asked to.
    @Test func twoImagesAtOnceSurviveACacheRestart() async throws {
        try await withCluster(nodes: 3, link: "100mbit") { cluster in
            func submit(_ nodes: String, _ image: String, _ output: String) async throws -> String {
                let submitted = try await cluster.shell(
                    "cd \(cluster.shared) && sbatch --parsable -w \(nodes) --output=\(cluster.shared)/\(output) --wrap "
                        + "'srun --container-image=10.78.0.1:5050/\(image) cat /version.txt'")
                #expect(submitted.status == 0, "\(submitted.stderr)")
                return submitted.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            let first = try await submit("node[1-3]", "etl:v1", "v1.out")
            let second = try await submit("node[2-3]", "etl:v2", "v2.out")
            // 121 MB over 100 Mbit/s takes about 10 s: restart the cache while the layers are on the way, i.e. once
            // a blob it is filling holds 4 MiB.
            try await waitUntil("the cache is filling a blob") { SlurmTests.aPartialBlob(in: cluster.cache.store.root, holds: 4 << 20) }
            try await cluster.restartCache()
            let restartedAt = Date()
            let deadline = Date().addingTimeInterval(240)
            while Date() < deadline, try await cluster.shell("squeue -h -j \(first),\(second)").stdout.contains(where: { !$0.isWhitespace }) {
                try await Task.sleep(for: .seconds(1))
            }
            let v1 = (try? String(contentsOfFile: cluster.shared + "/v1.out", encoding: .utf8)) ?? ""
            let v2 = (try? String(contentsOfFile: cluster.shared + "/v2.out", encoding: .utf8)) ?? ""
            #expect(v1.split(separator: "\n").filter { $0 == "v1" }.count == 3, "job on node[1-3]:\n\(v1)")
            #expect(v2.split(separator: "\n").filter { $0 == "v2" }.count == 2, "job on node[2-3]:\n\(v2)")
            // The restart fell in the middle of the transfer: the new cache had to fetch the rest from upstream.
            let refetched = try await cluster.cache.metric("slipway_cache_upstream_bytes_total")
            #expect(refetched > 1_000_000, "the restarted cache fetched \(refetched) bytes: the launch was over before the restart")
            #expect(Date().timeIntervalSince(restartedAt) < 120)
        }
    }

    /// Whether a blob being downloaded into the store at `root` (its partial file in ingest/) holds `bytes` yet: the
    /// sign that a transfer is under way, however long the loaded machine took to get there.
    static func aPartialBlob(in root: String, holds bytes: Int) -> Bool {
        let ingest = root + "/ingest"
        return ((try? FileManager.default.contentsOfDirectory(atPath: ingest)) ?? []).contains { name in
            var info = stat()
            return name.hasSuffix(".partial") && stat("\(ingest)/\(name)", &info) == 0 && info.st_size >= bytes
        }
    }

    /// A node killed (SIGKILL) in the middle of a shared pull: the other nodes finish, every blob in the shared
    /// store matches its digest, and the killed node's next pull takes over where the lock was left.
    @Test func nodeKilledMidSharedPull() async throws {
        try await withCluster(nodes: 3, link: "100mbit") { cluster in
            let store = cluster.shared + "/store"
            let prefetch = "\(slipwayBinary) prefetch -q --plain-http --store \(store) 10.78.0.1:5050/etl:v1"
            // A step per node, as three independent node-local launches: one step's death must not end the others.
            let submitted = try await cluster.shell(
                "cd \(cluster.shared) && sbatch --parsable -N3 --output=\(cluster.shared)/prefetch.out --wrap "
                    + "'for n in node1 node2 node3; do srun -N1 -n1 -w $n \(prefetch) & done; wait'")
            let job = submitted.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(submitted.status == 0, "\(submitted.stderr)")
            // node1's slipway: the slipway process (not an srun, whose command line holds the same words: the batch
            // step, and every srun in it, runs on node1) whose network namespace is node1's.
            let namespace = try await run("/usr/bin/stat", ["-L", "-c", "%i", "/run/netns/slwcl-node1"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            var victim: pid_t?
            let deadline = Date().addingTimeInterval(60)
            while victim == nil, Date() < deadline {
                for pid in try await run("/usr/bin/pgrep", ["-f", "slipway prefetch -q --plain-http --store \(store)"]).stdout.split(separator: "\n") {
                    let command = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)
                    guard command?.trimmingCharacters(in: .whitespacesAndNewlines) == "slipway" else { continue }
                    let inode = try? await run("/usr/bin/stat", ["-L", "-c", "%i", "/proc/\(pid)/ns/net"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
                    if inode == namespace { victim = pid_t(pid) }
                }
                if victim == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            let pid = try #require(victim, "no slipway prefetch on node1")
            // Mid-transfer (121 MB over 100 Mbit/s: about 10 s): a blob in the shared store holds 4 MiB so far.
            try await waitUntil("the nodes are pulling a blob into \(store)") { SlurmTests.aPartialBlob(in: store, holds: 4 << 20) }
            kill(pid, SIGKILL)
            let end = Date().addingTimeInterval(180)
            while Date() < end, try await cluster.shell("squeue -h -j \(job)").stdout.contains(where: { !$0.isWhitespace }) {
                try await Task.sleep(for: .seconds(1))
            }
            let output = (try? String(contentsOfFile: cluster.shared + "/prefetch.out", encoding: .utf8)) ?? ""
            #expect(output.split(separator: "\n").filter { $0.hasPrefix("sha256:") }.count == 2, "the other two nodes finished:\n\(output)")
            // Nothing corrupt: every committed blob hashes to its name.
            let blobs = store + "/blobs/sha256"
            for name in try FileManager.default.contentsOfDirectory(atPath: blobs) {
                let sum = try await run("/usr/bin/sha256sum", ["\(blobs)/\(name)"]).stdout.prefix(64)
                #expect(String(sum) == name, "blob \(name) hashes to \(sum)")
            }
            // node1 again: the dead holder's locks went with it.
            let again = try await cluster.shell("srun -w node1 \(prefetch)")
            #expect(again.status == 0 && again.stdout.hasPrefix("sha256:"), "\(again.stdout) \(again.stderr)")
        }
    }

    /// `slipway bench scale --quick`: one and two nodes, every strategy, cold then warm. Every launch has one
    /// result per node; straight from the registry two nodes cost two images, through the cache or into the shared
    /// store (by `slipway run` or the plugin) one; the patch release moves next to nothing; the report has the
    /// scale section; nothing is left.
    @Test func quickScaleBenchmarkCountsUpstreamBytesPerStrategy() async throws {
        let scratch = "/var/tmp/slipway-test-scale", out = "/var/tmp/slipway-test-scale-results", log = "/var/tmp/slipway-test-scale.log"
        try? FileManager.default.removeItem(atPath: out)
        let status = try await runShellCommand(
            "'\(slipwayBinary)' bench scale --quick --work '\(BenchTests.work)' --scratch '\(scratch)' --out '\(out)' </dev/null >'\(log)' 2>&1")
        #expect(status == 0, "\(((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").suffix(3000))")
        let rows = try String(contentsOfFile: out + "/scale.jsonl", encoding: .utf8).split(separator: "\n").map {
            try #require(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
        #expect(rows.count == 20, "5 strategies x 2 node counts x cold and warm: \(rows.count) rows")
        func upstream(_ strategy: String, _ nodes: Int, _ cache: String) throws -> Double {
            let row = try #require(rows.first { $0["strategy"] as? String == strategy && $0["nodes"] as? Int == nodes && $0["cache"] as? String == cache })
            return try #require(row["upstream_bytes"] as? Double ?? (row["upstream_bytes"] as? Int).map(Double.init), "\(row)")
        }
        for row in rows {
            #expect(row["ok"] as? Bool == true, "\(row)")
            let tasks = row["tasks"] as? [[String: Any]] ?? []
            #expect(tasks.count == row["nodes"] as? Int && Set(tasks.compactMap { $0["node"] as? String }).count == tasks.count, "\(row)")
        }
        let image = try upstream("direct", 1, "cold")
        #expect(image > 50_000_000, "one cold pull moved \(image) bytes")
        #expect((1.9...2.1).contains(try upstream("direct", 2, "cold") / image))
        for strategy in ["cache", "shared", "plugin"] {
            #expect((0.95...1.05).contains(try upstream(strategy, 2, "cold") / image), "\(strategy)")
        }
        for strategy in ["direct", "cache", "shared", "lazy", "plugin"] {
            #expect(try upstream(strategy, 2, "warm") < image * 0.01, "\(strategy): the patch release")
        }
        let report = try String(contentsOfFile: out + "/report.html", encoding: .utf8)
        #expect(report.contains("Scale: one job on many nodes") && report.contains("<svg"))
        let mounts = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        #expect(!mounts.contains(scratch), "mounts left under \(scratch)")
        #expect(!FileManager.default.fileExists(atPath: "/run/netns/slwcl-node1"), "the cluster is still up")
        #expect(try await run("/usr/bin/pgrep", ["-f", scratch]).stdout.isEmpty, "processes left from \(scratch)")
    }
}
