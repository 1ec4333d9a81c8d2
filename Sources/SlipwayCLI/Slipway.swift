import Archive
import ArgumentParser
import ContentStore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

@main
struct SlipwayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "slipway",
        abstract: "Get OCI container images onto HPC and Kubernetes nodes fast.",
        version: "0.1.0",
        subcommands: [Pull.self, Copy.self, Unpack.self, Images.self, Inspect.self, Remove.self, GC.self, DemoImageCommand.self, Assemble.self, Convert.self, Export.self, IndexCommand.self, Mount.self, Umount.self, Status.self, Serve.self, SnapshotterCommand.self, Run.self, Prefetch.self, Bench.self, Bundle.self, SlurmCommand.self]
    )

    /// Exit codes as DESIGN.md promises: 0 success, 1 operational failure, 2 usage error.
    static func main() async {
        // Writes to a pipe whose reader is gone (a credential helper, `| head`) must fail, not kill us.
        signal(SIGPIPE, SIG_IGN)
        var command: any ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Glibc.exit(0)
            }
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            Glibc.exit(2)
        }
        do {
            if let decompressing = command as? any DecompressingCommand {
                DecompressionLimit.configured = try decompressing.decompression.limit()
            }
            if command is any WritesPartialOutput { PartialOutput.removeOnTerminationSignals() }
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as ValidationError {
            fail(error.message, exitCode: 2)
        } catch where exitCode(for: error) == .success {
            // `--help` and `help` on a subcommand arrive here, from the help command parseAsRoot returned.
            print(fullMessage(for: error))
            Glibc.exit(0)
        } catch {
            fail(describe(error), exitCode: 1)
        }
    }

    /// Reports a failure on stderr, and with `--json` also as the one JSON document on stdout.
    static func fail(_ message: String, exitCode: Int32) -> Never {
        FileHandle.standardError.write(Data("error: \(message)\n".utf8))
        if CommandLine.arguments.contains("--json") {
            struct Failure: Encodable { var error: String; var exitCode: Int32 }
            try? printJSON(Failure(error: message, exitCode: exitCode))
        }
        Glibc.exit(exitCode)
    }

    /// Foundation's file errors print as dictionaries; users need the path and the reason.
    static func describe(_ error: any Error) -> String {
        if let cocoa = error as? CocoaError {
            let path = (cocoa.userInfo[NSFilePathErrorKey] as? String) ?? cocoa.filePath ?? ""
            let reason = (cocoa.userInfo[NSUnderlyingErrorKey] as? NSError)?.localizedDescription ?? cocoa.localizedDescription
            return path.isEmpty ? reason : "\(path): \(reason)"
        }
        return String(describing: error)
    }
}
