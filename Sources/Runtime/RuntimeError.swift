import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Why a container could not be run. Each message says what to do about it.
public enum RuntimeError: Error, CustomStringConvertible, Sendable {
    /// The OCI runtime binary is not installed (or not at the path given).
    case runtimeNotFound(name: String, package: String, looked: String)
    case invalidBind(String, reason: String)
    case bindSourceMissing(String)
    case bindDestinationMissing(String)
    case invalidEnvironment(String)
    case invalidUser(String, reason: String)
    case noCommand
    case invalidWorkingDirectory(String)
    case mountFailed(what: String, target: String, errno: Int32)
    case commandFailed(command: String, status: Int32, output: String)
    case rootlessUnavailable(String)
    case needsRoot(String)
    case spawnFailed(String, errno: Int32)
    case sifUnavailable(String)
    case readOnlyRootLacks([String])

    public var description: String {
        switch self {
        case .runtimeNotFound(let name, let package, let looked):
            return "the OCI runtime \(name) is not installed (looked for \(looked)); install the Debian package \(package): apt-get install \(package)"
        case .invalidBind(let text, let reason):
            return "--bind \(text): \(reason); the form is SRC:DST[:ro]"
        case .bindSourceMissing(let path):
            return "--bind source \(path) does not exist; create it first (nothing was mounted)"
        case .bindDestinationMissing(let path):
            return "--bind destination \(path) does not exist in the read-only root filesystem; bind to a directory the image has"
        case .invalidEnvironment(let text):
            return "--env \(text): the form is KEY=VALUE"
        case .invalidUser(let text, let reason):
            return "user '\(text)': \(reason)"
        case .noCommand:
            return "the image has no Entrypoint or Cmd; give the command after --, as in slipway run REF -- /bin/sh -c 'echo hi'"
        case .invalidWorkingDirectory(let path):
            return "working directory \(path) must be an absolute path"
        case .mountFailed(let what, let target, let errno):
            return "mounting \(what) at \(target) failed: \(String(cString: strerror(errno)))"
        case .commandFailed(let command, let status, let output):
            let detail = output.trimmingCharacters(in: .whitespacesAndNewlines)
            return "\(command) failed (status \(status))\(detail.isEmpty ? "" : ": \(detail)")"
        case .rootlessUnavailable(let reason):
            return "running without root needs unprivileged user namespaces, which this kernel does not allow (\(reason)); run as root or enable them"
        case .needsRoot(let what):
            return what
        case .spawnFailed(let command, let errno):
            return "cannot start \(command): \(String(cString: strerror(errno)))"
        case .sifUnavailable(let reason):
            return reason
        case .readOnlyRootLacks(let paths):
            return "the root filesystem is read-only here (not root) and the image has no \(paths.joined(separator: ", ")) to mount on; "
                + "run as root (the root then gets a writable layer) or use --mode unpacked"
        }
    }
}
