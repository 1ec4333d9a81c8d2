/// The image configuration (OCI image-spec `config.go`). Unknown fields are not preserved: the config's
/// bytes are always kept as fetched, this type is only for reading.
public struct ImageConfig: Codable, Sendable, Hashable {
    public var created: String?
    public var author: String?
    public var architecture: String
    public var os: String
    public var variant: String?
    public var config: ContainerConfig?
    public var rootfs: RootFS
    public var history: [History]?

    public struct ContainerConfig: Codable, Sendable, Hashable {
        public var User: String?
        public var Env: [String]?
        public var Entrypoint: [String]?
        public var Cmd: [String]?
        public var WorkingDir: String?
        public var Labels: [String: String]?
        public var StopSignal: String?
        public var ExposedPorts: [String: Empty]?
        public var Volumes: [String: Empty]?

        public init(Env: [String]? = nil, Entrypoint: [String]? = nil, Cmd: [String]? = nil, WorkingDir: String? = nil) {
            self.Env = Env
            self.Entrypoint = Entrypoint
            self.Cmd = Cmd
            self.WorkingDir = WorkingDir
        }
    }

    public struct Empty: Codable, Sendable, Hashable { public init() {} }

    public struct RootFS: Codable, Sendable, Hashable {
        public var type: String
        public var diff_ids: [Digest]
        public init(diffIDs: [Digest]) {
            type = "layers"
            diff_ids = diffIDs
        }
    }

    public struct History: Codable, Sendable, Hashable {
        public var created: String?
        public var created_by: String?
        public var comment: String?
        public var empty_layer: Bool?
        public init(created: String? = nil, createdBy: String? = nil, emptyLayer: Bool? = nil) {
            self.created = created
            self.created_by = createdBy
            self.empty_layer = emptyLayer
        }
    }

    public init(platform: Platform, config: ContainerConfig?, diffIDs: [Digest], history: [History]? = nil, created: String? = nil) {
        self.architecture = platform.architecture
        self.os = platform.os
        self.variant = platform.variant
        self.config = config
        self.rootfs = RootFS(diffIDs: diffIDs)
        self.history = history
        self.created = created
    }
}
