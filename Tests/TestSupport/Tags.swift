import Testing

/// What a suite needs and costs, so that a developer can run the fast set alone (`scripts/test-tag unit`,
/// README "Running a subset"). Every suite carries `unit` or `integration`; long ones also carry `slow`.
extension Tag {
    /// The code under test runs in the test process. A suite may still compare against a small local command
    /// (sha256sum, gzip, htpasswd) that answers in milliseconds, but it starts no server, registry, proxy,
    /// mount, container, cluster or compiler, and needs no root.
    @Tag public static var unit: Self

    /// Exercises real components: docker-registry, the fault proxy, skopeo, umoci, siftool, GNU tar, runc,
    /// containerd, FUSE mounts, the slipway binary, the Go reference tools.
    @Tag public static var integration: Self

    /// Typically more than about 20 s on a two-core machine: clusters, benchmarks, lazy mounts of whole images,
    /// big conversions, serialized suites of many registry round trips.
    @Tag public static var slow: Self
}
