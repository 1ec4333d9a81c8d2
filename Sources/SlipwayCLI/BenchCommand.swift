import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `slipway bench …`: the benchmarks of the README. Each subcommand hands over to its harness in the checkout's
/// bench/etl (shell for namespaces, qdiscs and daemons; Python for per-run measurement and the report), with
/// this binary as the Slipway under test, so what is measured is exactly what the user runs.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Build the benchmark images and run the Patch Tuesday, lazy-vs-full and scale benchmarks.",
        discussion: """
            The harness scripts live in the Slipway checkout (bench/etl); they are found next to this binary \
            (it is built inside the checkout) or in $SLIPWAY_BENCH_DIR. Benchmarks need root: they create \
            network namespaces and TBF qdiscs, mount images and drop the page cache. Ctrl-C stops a benchmark \
            and removes its mounts, namespaces, qdiscs and daemons. Results (JSONL, CSV, report.html with \
            charts) go to bench/results unless --out says otherwise; each command's --help lists its options.
            """,
        subcommands: [BenchImages.self, BenchPatchTuesday.self, BenchLazyVsFull.self, BenchGzipIndex.self, BenchScale.self, BenchReport.self])
}

struct BenchImages: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "images",
        abstract: "Build etl:v1..v5 and etl-lazy:small/medium/large (+ eStargz forms) with debootstrap and push them.",
        discussion: "Pushes to an embedded docker-registry on 127.0.0.1:5000 unless --registry HOST:PORT. Options: --help.")
    @Argument(parsing: .captureForPassthrough, help: "Options for bench/etl/build-images.sh.") var options: [String] = []
    func run() throws { try BenchHarness.exec("build-images.sh", options, needsRoot: true) }
}

struct BenchPatchTuesday: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "patch-tuesday",
        abstract: "Redeploy etl:v1..v5 (only /version.txt changes) by every strategy, cold and warm, over shaped links.",
        discussion: "--quick runs one link, two versions, one run. Options: --help.")
    @Argument(parsing: .captureForPassthrough, help: "Options for bench/etl/patch-tuesday.sh.") var options: [String] = []
    func run() throws { try BenchHarness.exec("patch-tuesday.sh", options, needsRoot: true) }
}

struct BenchLazyVsFull: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lazy-vs-full",
        abstract: "Time to each checkpoint of the 3-stage ETL: full pull against lazy eStargz variants, small to large.",
        discussion: "--quick runs small on loopback, one run. Options: --help.")
    @Argument(parsing: .captureForPassthrough, help: "Options for bench/etl/lazy-vs-full.sh.") var options: [String] = []
    func run() throws { try BenchHarness.exec("lazy-vs-full.sh", options, needsRoot: true) }
}

struct BenchGzipIndex: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gzip-index",
        abstract: "What a gzip index costs: its size against its layer, building it against gunzip, the cache's CPU with --index.",
        discussion: "Options: --help.")
    @Argument(parsing: .captureForPassthrough, help: "Options for bench/etl/gzip-index.sh.") var options: [String] = []
    func run() throws { try BenchHarness.exec("gzip-index.sh", options, needsRoot: true) }
}

struct BenchScale: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scale",
        abstract: "Launch the Patch Tuesday job on 1..16 nodes of a local Slurm cluster at once, per strategy, cold and warm.",
        discussion: "--quick runs 1 and 2 nodes on an unshaped link. Options: --help.")
    @Argument(parsing: .captureForPassthrough, help: "Options for bench/etl/scale.sh.") var options: [String] = []
    func run() throws { try BenchHarness.exec("scale.sh", options, needsRoot: true) }
}

struct BenchReport: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write DIR/report.html from the results in DIR (default bench/results) and print the summary.")
    @Argument(parsing: .captureForPassthrough, help: "DIR [--out FILE] [--summary-only]") var options: [String] = []
    func run() throws {
        let arguments = options.isEmpty ? [try BenchHarness.directory() + "/../results"] : options
        try BenchHarness.exec("html_report.py", arguments, needsRoot: false, interpreter: "/usr/bin/python3")
    }
}

enum BenchHarness {
    /// bench/etl of the checkout this binary was built in, or $SLIPWAY_BENCH_DIR.
    static func directory() throws -> String {
        let marker = "patch-tuesday.sh"
        if let configured = ProcessInfo.processInfo.environment["SLIPWAY_BENCH_DIR"], !configured.isEmpty {
            guard FileManager.default.fileExists(atPath: configured + "/" + marker) else {
                throw ValidationError("SLIPWAY_BENCH_DIR=\(configured) has no \(marker): point it at a Slipway checkout's bench/etl")
            }
            return configured
        }
        var candidate = URL(fileURLWithPath: executablePath()).deletingLastPathComponent()
        while candidate.path != "/" {
            let harness = candidate.appendingPathComponent("bench/etl")
            if FileManager.default.fileExists(atPath: harness.appendingPathComponent(marker).path) { return harness.path }
            candidate.deleteLastPathComponent()
        }
        throw ValidationError("""
            the benchmark harness (bench/etl) was not found above \(executablePath()): run a slipway built in a \
            Slipway checkout, or set SLIPWAY_BENCH_DIR to a checkout's bench/etl
            """)
    }

    /// Replaces this process with the harness, so Ctrl-C reaches it (and its cleanup traps) as it would from a
    /// shell, and its exit status is ours.
    static func exec(_ script: String, _ options: [String], needsRoot: Bool, interpreter: String = "/bin/bash") throws -> Never {
        let path = try directory() + "/" + script
        if needsRoot && geteuid() != 0 && !options.contains(where: { $0 == "--help" || $0 == "-h" }) {
            throw ValidationError("the benchmarks need root (network namespaces, tc qdiscs, mounts, drop_caches): run with sudo")
        }
        var arguments = [interpreter, path] + options
        if interpreter == "/bin/bash" && !options.contains("--slipway") {
            arguments += ["--slipway", executablePath()]
        }
        let cArguments = arguments.map { strdup($0) } + [nil]
        execv(interpreter, cArguments)
        let reason = String(cString: strerror(errno))
        cArguments.forEach { free($0) }
        throw ValidationError("cannot run \(interpreter) \(path): \(reason)")
    }
}
