import Foundation

/// A host directory or file made visible in the container: `SRC:DST[:ro]` (`:rw`, the default, is accepted too).
public struct BindMount: Sendable, Equatable, CustomStringConvertible {
    /// Absolute host path.
    public var source: String
    /// Absolute path in the container.
    public var destination: String
    public var readOnly: Bool

    public init(source: String, destination: String, readOnly: Bool = false) {
        self.source = source
        self.destination = destination
        self.readOnly = readOnly
    }

    /// Parses `SRC:DST[:ro|rw]`; a relative SRC is taken from `directory` (the current directory by default).
    public init(parsing text: String, relativeTo directory: String = FileManager.default.currentDirectoryPath) throws {
        var parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        var readOnly = false
        if parts.count == 3 {
            switch parts[2] {
            case "ro": readOnly = true
            case "rw": readOnly = false
            default: throw RuntimeError.invalidBind(text, reason: "the third field must be ro or rw, not '\(parts[2])'")
            }
            parts.removeLast()
        }
        guard parts.count == 2 else { throw RuntimeError.invalidBind(text, reason: "expected two or three fields separated by ':'") }
        guard !parts[0].isEmpty else { throw RuntimeError.invalidBind(text, reason: "the source is empty") }
        guard parts[1].hasPrefix("/") else { throw RuntimeError.invalidBind(text, reason: "the destination must be an absolute path") }
        let destination = (parts[1] as NSString).standardizingPath
        guard destination != "/" else { throw RuntimeError.invalidBind(text, reason: "the destination cannot be /") }
        let source = parts[0].hasPrefix("/") ? parts[0] : "\(directory)/\(parts[0])"
        self.init(source: (source as NSString).standardizingPath, destination: destination, readOnly: readOnly)
    }

    /// Fails with a clear error when the source does not exist (checked before anything is mounted).
    public func checkSource() throws {
        var info = stat()
        guard stat(source, &info) == 0 else { throw RuntimeError.bindSourceMissing(source) }
    }

    var specMount: RuntimeSpec.Mount {
        RuntimeSpec.Mount(destination: destination, type: "bind", source: source, options: ["rbind", readOnly ? "ro" : "rw", "nosuid", "nodev"])
    }

    public var description: String { "\(source):\(destination)\(readOnly ? ":ro" : "")" }
}

/// What the user asked for on top of the image config: `slipway run`'s options.
public struct RunConfiguration: Sendable {
    /// Replaces the image's Cmd (the Entrypoint stays), as with `docker run IMAGE CMD...`.
    public var command: [String]?
    /// Replaces the image's Entrypoint; an empty array clears it.
    public var entrypoint: [String]?
    /// `KEY=VALUE` pairs that override the image's Env by key.
    public var environment: [String] = []
    public var workingDirectory: String?
    /// `uid[:gid]` or `name[:group]`, resolved against the image's /etc/passwd and /etc/group.
    public var user: String?
    public var binds: [BindMount] = []
    public var hostname = "slipway"

    public init(
        command: [String]? = nil, entrypoint: [String]? = nil, environment: [String] = [], workingDirectory: String? = nil, user: String? = nil,
        binds: [BindMount] = []
    ) {
        self.command = command
        self.entrypoint = entrypoint
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.user = user
        self.binds = binds
    }

    /// Checks what can be checked before anything is fetched or mounted: the form of every option and that every
    /// bind source exists.
    public func validate() throws {
        for variable in environment {
            guard let equals = variable.firstIndex(of: "="), equals != variable.startIndex else {
                throw RuntimeError.invalidEnvironment(variable)
            }
        }
        if let workingDirectory, !workingDirectory.hasPrefix("/") { throw RuntimeError.invalidWorkingDirectory(workingDirectory) }
        if let user, user.isEmpty || user.hasPrefix(":") || user.hasSuffix(":") {
            throw RuntimeError.invalidUser(user, reason: "the form is uid[:gid] or name[:group]")
        }
        for bind in binds { try bind.checkSource() }
    }
}
