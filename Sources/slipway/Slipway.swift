import ArgumentParser
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
        subcommands: [Pull.self, Copy.self, Unpack.self, Images.self, Inspect.self, Remove.self, GC.self, DemoImageCommand.self, Assemble.self]
    )

    /// Exit codes as DESIGN.md promises: 0 success, 1 operational failure, 2 usage error.
    static func main() async {
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
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as ValidationError {
            FileHandle.standardError.write(Data("error: \(error.message)\n".utf8))
            Glibc.exit(2)
        } catch is CleanExit {
            Glibc.exit(0)
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            Glibc.exit(1)
        }
    }
}
