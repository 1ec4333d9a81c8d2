/// The part of the OCI runtime specification (`config.json`, runtime-spec 1.0.2) that Slipway writes. Optional
/// fields left nil are omitted from the JSON, so runc and crun apply their own defaults to them.
public struct RuntimeSpec: Codable, Sendable, Equatable {
    public var ociVersion = "1.0.2"
    public var process: Process
    public var root: Root
    public var hostname: String?
    public var mounts: [Mount]
    public var linux: Linux

    public struct Process: Codable, Sendable, Equatable {
        public var terminal = false
        public var user: User
        public var args: [String]
        public var env: [String]
        public var cwd: String
        public var capabilities: Capabilities?
        public var noNewPrivileges = true
    }

    public struct User: Codable, Sendable, Equatable {
        public var uid: UInt32
        public var gid: UInt32
        public var additionalGids: [UInt32]?

        public init(uid: UInt32, gid: UInt32, additionalGids: [UInt32]? = nil) {
            self.uid = uid
            self.gid = gid
            self.additionalGids = additionalGids
        }
    }

    public struct Capabilities: Codable, Sendable, Equatable {
        public var bounding: [String]
        public var effective: [String]
        public var permitted: [String]
        public var inheritable: [String]?
        public var ambient: [String]?
    }

    public struct Root: Codable, Sendable, Equatable {
        public var path: String
        public var readonly: Bool
    }

    public struct Mount: Codable, Sendable, Equatable {
        public var destination: String
        public var type: String
        public var source: String
        public var options: [String]?

        public init(destination: String, type: String, source: String, options: [String]? = nil) {
            self.destination = destination
            self.type = type
            self.source = source
            self.options = options
        }
    }

    public struct Linux: Codable, Sendable, Equatable {
        public var namespaces: [Namespace]
        public var uidMappings: [IDMapping]?
        public var gidMappings: [IDMapping]?
        public var cgroupsPath: String?
        public var resources: Resources?
        public var maskedPaths: [String]?
        public var readonlyPaths: [String]?
    }

    public struct Namespace: Codable, Sendable, Equatable {
        public var type: String
        public init(_ type: String) { self.type = type }
    }

    public struct IDMapping: Codable, Sendable, Equatable {
        public var containerID: UInt32
        public var hostID: UInt32
        public var size: UInt32

        public init(containerID: UInt32, hostID: UInt32, size: UInt32) {
            self.containerID = containerID
            self.hostID = hostID
            self.size = size
        }
    }

    public struct Resources: Codable, Sendable, Equatable {
        public var devices: [DeviceRule]?
    }

    public struct DeviceRule: Codable, Sendable, Equatable {
        public var allow: Bool
        public var access: String?
    }
}
