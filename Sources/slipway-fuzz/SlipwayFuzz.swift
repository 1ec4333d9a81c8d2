import Foundation
import FuzzTargets

#if FUZZING
import CLibFuzzer
#endif

/// Built with `-sanitize=fuzzer -DFUZZING` (scripts/fuzz): libFuzzer drives the target named by
/// `SLIPWAY_FUZZ_TARGET` (an environment variable, not an argument, because libFuzzer re-runs its own command line
/// for -minimize_crash and -fork). Built normally: `slipway-fuzz TARGET FILE-OR-DIRECTORY...` runs each input
/// once, to reproduce a crash with a debug build's full stack.
@main
struct SlipwayFuzz {
    static let usage = "usage: slipway-fuzz TARGET FILE-OR-DIRECTORY...   (targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: " ")))"

    static func main() {
        #if FUZZING
        guard let name = ProcessInfo.processInfo.environment["SLIPWAY_FUZZ_TARGET"], let target = FuzzTarget(rawValue: name) else {
            fail("set SLIPWAY_FUZZ_TARGET to one of: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: " "))")
        }
        fuzzedTarget = target
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
            fuzzedTarget.run(size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
            return 0
        })
        #else
        let arguments = CommandLine.arguments.dropFirst()
        guard let name = arguments.first, let target = FuzzTarget(rawValue: name), arguments.count > 1 else { fail(usage) }
        for path in arguments.dropFirst() {
            for file in inputs(at: path) {
                guard let data = FileManager.default.contents(atPath: file) else { fail("cannot read \(file)") }
                target.run(Array(data))
                print("ok \(file)")
            }
        }
        #endif
    }

    /// A file, or the files of a directory (a corpus), in name order.
    static func inputs(at path: String) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else { return [path] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.sorted().map { "\(path)/\($0)" }
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("slipway-fuzz: \(message)\n".utf8))
        exit(2)
    }
}

#if FUZZING
/// The target libFuzzer's C callback runs (it cannot capture).
nonisolated(unsafe) var fuzzedTarget = FuzzTarget.tar
#endif
