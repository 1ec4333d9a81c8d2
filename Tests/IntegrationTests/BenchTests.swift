import Foundation
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

let benchTestsEnabled = geteuid() == 0 && FileManager.default.fileExists(atPath: "/dev/fuse")
    && ["/usr/sbin/debootstrap", "/usr/bin/docker-registry", "/usr/sbin/runc", "/usr/bin/ctr"].allSatisfy(FileManager.default.isExecutableFile)

/// `slipway bench` end to end on real images (debootstrap, python3, numpy, pandas), a real registry behind a
/// network namespace, and every piece it drives. The suite is serialized: the benchmarks own one namespace.
@Suite(.tags(.integration, .slow), .enabled(if: benchTestsEnabled, "needs root, FUSE, debootstrap, docker-registry, runc and containerd"), .serialized)
struct BenchTests {
    /// Images and registry storage survive between tests (and CI runs on one machine): building them is the
    /// slow part (debootstrap and apt-get, a few minutes the first time).
    static let work = "/var/tmp/slipway-bench-test"
    static let namespace = "slwbench-reg"

    /// Minutes the first time: run without holding a thread of the concurrency pool (other suites need them).
    func buildImages() async throws {
        let result = try await run(slipwayBinary, ["bench", "images", "--sizes", "", "--versions", "2", "--work", Self.work])
        #expect(result.status == 0, "slipway bench images failed:\n\(result.stderr.suffix(2000))")
    }

    func rows(_ path: String) throws -> [[String: Any]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            try #require(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    /// What an interrupted or finished benchmark must not leave: mounts under its directory, its namespace,
    /// its veth or processes started from its directory (registry, containerd, shims, FUSE servers).
    func leftovers() throws -> [String] {
        var found: [String] = []
        let mounts = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        found += mounts.split(separator: "\n").compactMap { line in
            let target = line.split(separator: " ")[4]
            return target.hasPrefix(Self.work) ? "mount \(target)" : nil
        }
        if FileManager.default.fileExists(atPath: "/run/netns/\(Self.namespace)") { found.append("netns \(Self.namespace)") }
        if FileManager.default.fileExists(atPath: "/sys/class/net/slwbench-h") { found.append("link slwbench-h") }
        for pid in try FileManager.default.contentsOfDirectory(atPath: "/proc") where Int32(pid) != nil {
            guard let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { continue }
            let text = String(decoding: cmdline, as: UTF8.self).replacingOccurrences(of: "\0", with: " ")
            if text.contains(Self.work + "/patch-tuesday") || text.contains(Self.work + "/lazy-vs-full") {
                found.append("process \(pid): \(text.prefix(160))")
            }
        }
        return found
    }

    @Test func quickPatchTuesdayMovesOnlyTheNewVersionAndRendersItsReport() async throws {
        try await buildImages()
        let out = try ScratchDirectory()
        let result = try await run(slipwayBinary, [
            "bench", "patch-tuesday", "--quick", "--strategies", "overlay,lazy,lazy-profile", "--work", Self.work, "--out", out.path,
        ])
        #expect(result.status == 0, "\(result.stderr.suffix(3000))")
        let deploys = try rows(out.sub("patch-tuesday.jsonl"))
        #expect(deploys.count == 12, "3 strategies x cold/warm x v1, v2")
        for deploy in deploys {
            #expect(deploy["ok"] as? Bool == true, "\(deploy)")
        }
        // A warm redeploy of v2 moves the manifest, the config and the version layer: far under 1 % of v1. A lazy
        // run finishes its prefetch before it returns and writes the layers out, so the lazy redeploy moves no
        // more than the overlay's (it pulls the small version layer whole, beside v1's written-out layers).
        for (strategy, share) in [("overlay", 100), ("lazy", 100), ("lazy-profile", 100)] {
            let v1 = try #require(deploys.first { $0["strategy"] as? String == strategy && $0["cache"] as? String == "cold" && $0["version"] as? Int == 1 })
            let v2 = try #require(deploys.first { $0["strategy"] as? String == strategy && $0["cache"] as? String == "warm" && $0["version"] as? Int == 2 })
            let cold = try #require(v1["bytes"] as? Int), warm = try #require(v2["bytes"] as? Int)
            #expect(cold > 50_000_000, "\(strategy): v1 moved \(cold) bytes")
            #expect(warm < cold / share, "\(strategy): warm v2 moved \(warm) bytes of v1's \(cold)")
        }
        let html = try String(contentsOfFile: out.sub("report.html"), encoding: .utf8)
        #expect(html.contains("<svg") && html.contains("Patch Tuesday"))
        #expect(result.stdout.contains("report: \(out.path)/report.html"))
        let left = try leftovers()
        #expect(left == [], "\(left)")

        // The report is looked at in a real browser: headless Chromium renders it to a PNG.
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium") {
            let shot = out.sub("report.png")
            let chromium = try await run("/usr/bin/timeout", [
                "120", "/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--screenshot=\(shot)",
                "--window-size=1200,3000", "file://\(out.sub("report.html"))",
            ])
            let size = (try? FileManager.default.attributesOfItem(atPath: shot)[.size] as? Int) ?? 0
            #expect(size > 50_000, "chromium wrote \(size) bytes: \(chromium.stderr.suffix(1000))")
        }
    }

    /// Ctrl-C as a terminal sends it (SIGINT to the whole process group) in the middle of deploys with a lazy
    /// mount and a containerd running: the benchmark stops and takes everything it set up with it.
    @Test(arguments: ["lazy", "containerd"])
    func interruptedBenchmarkLeavesNothingBehind(strategy: String) async throws {
        try await buildImages()
        let out = try ScratchDirectory()
        // As from a terminal: its own process group, SIGINT neither ignored nor blocked (a test runner's children may
        // inherit either, and a shell cannot trap a signal ignored on entry).
        let process = try ChildProcess("/usr/bin/python3", [
            "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); signal.pthread_sigmask(signal.SIG_SETMASK, []); os.setpgid(0, 0); os.execv(sys.argv[1], sys.argv[1:])",
            slipwayBinary, "bench", "patch-tuesday", "--quick", "--strategies", strategy, "--work", Self.work, "--out", out.path])

        // Wait until the deploy is under way: a lazy mount, or containerd's snapshot mounts and shim.
        let deadline = Date().addingTimeInterval(240)
        var busy = false
        while Date() < deadline, process.endedStatus == nil, !busy {
            busy = try leftovers().contains { $0.hasPrefix("mount") || $0.contains("containerd-shim") }
            if !busy { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(busy, "the benchmark never got to a mount or a container")
        kill(-process.pid, SIGINT)
        let stopBy = Date().addingTimeInterval(60)
        while process.endedStatus == nil, Date() < stopBy { try await Task.sleep(for: .milliseconds(100)) }
        #expect(process.endedStatus != nil, "still running 60 s after Ctrl-C")
        if process.endedStatus == nil { kill(-process.pid, SIGKILL) }
        #expect(await process.exitStatus() == 130, "exit status after Ctrl-C")
        let left = try leftovers()
        #expect(left == [], "\(left)")
        let qdiscs = try await run("/usr/sbin/tc", ["qdisc", "show"]).stdout
        #expect(!qdiscs.contains("slwbench"), "\(qdiscs)")
    }

    /// A deploy that fails is a row with ok=false and its reason, listed in the report, never averaged in.
    @Test func failedDeploysAreReportedAsFailed() async throws {
        try await buildImages()
        let out = try ScratchDirectory()
        let result = try await run(slipwayBinary, [
            "bench", "patch-tuesday", "--strategies", "sif-apptainer", "--links", "none", "--versions", "1", "--runs", "1",
            "--caches", "cold", "--timeout", "1", "--work", Self.work, "--out", out.path,
        ])
        #expect(result.status == 0, "\(result.stderr.suffix(2000))")
        let deploys = try rows(out.sub("patch-tuesday.jsonl"))
        #expect(deploys.count == 1)
        #expect(deploys.first?["ok"] as? Bool == false)
        #expect((deploys.first?["error"] as? String ?? "").contains("timed out"), "\(deploys)")
        let html = try String(contentsOfFile: out.sub("report.html"), encoding: .utf8)
        #expect(html.contains("Failed runs") && html.contains("timed out"))
        let left = try leftovers()
        #expect(left == [], "\(left)")
    }

    @Test func badOptionsAreUsageErrorsNamingTheProblem() async throws {
        let link = try await run(slipwayBinary, ["bench", "patch-tuesday", "--links", "10furlongs"])
        #expect(link.status == 2 && link.stderr.contains("10furlongs"), "\(link.stderr)")
        let variant = try await run(slipwayBinary, ["bench", "lazy-vs-full", "--variants", "teleport"])
        #expect(variant.status == 2 && variant.stderr.contains("unknown variant teleport"), "\(variant.stderr)")
        let nodes = try await run(slipwayBinary, ["bench", "scale", "--nodes", "1,0"])
        #expect(nodes.status == 2 && nodes.stderr.contains("--nodes: 0 is not a node count"), "\(nodes.stderr)")
        let strategy = try await run(slipwayBinary, ["bench", "scale", "--strategies", "carrier-pigeon"])
        #expect(strategy.status == 2 && strategy.stderr.contains("unknown strategy carrier-pigeon"), "\(strategy.stderr)")
        let elsewhere = try await run(slipwayBinary, ["bench", "patch-tuesday", "--quick"], environment: ["SLIPWAY_BENCH_DIR": "/nonexistent"])
        #expect(elsewhere.status == 2 && elsewhere.stderr.contains("SLIPWAY_BENCH_DIR"), "\(elsewhere.stderr)")
    }
}
