// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "Slipway",
    products: [
        .executable(name: "slipway", targets: ["slipway"]),
        .library(name: "Slipway", targets: ["Slipway"]),
        .executable(name: "slipway-fuzz", targets: ["slipway-fuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
    ],
    targets: [
        .systemLibrary(name: "CISAL", pkgConfig: "libisal", providers: [.apt(["libisal-dev"])]),
        .systemLibrary(name: "CLinux", path: "Sources/CLinux"),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CDeflate", path: "Sources/CDeflate", providers: [.apt(["libdeflate-dev"])]),
        .systemLibrary(name: "CFuse3", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        .systemLibrary(name: "CCrypt", path: "Sources/CCrypt", providers: [.apt(["libcrypt-dev"])]),
        // zlib, for inflating from the middle of a gzip stream (inflatePrime, inflateSetDictionary, Z_BLOCK), which
        // neither ISA-L nor libdeflate offers.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
        // The one way blocking work and child processes leave Swift's cooperative pool; below every other module.
        .target(name: "Blocking"),
        .target(name: "OCI", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),
        .target(
            name: "Archive",
            dependencies: ["CISAL", "CZstd", "CLinux", .product(name: "Crypto", package: "swift-crypto")]
        ),
        .target(
            name: "EStargz",
            dependencies: ["Blocking", "Archive", "OCI", "CDeflate", .product(name: "Crypto", package: "swift-crypto")]
        ),
        .target(name: "ContentStore", dependencies: ["Blocking", "OCI", "CLinux", .product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "FUSE", dependencies: ["CFuse3"]),
        .target(
            name: "Registry",
            dependencies: [
                "Blocking", "OCI",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The image model: where an image's bytes come from (registry, OCI layout, staged files), one platform's
        // resolved image, its layers unpacked into root filesystems, and progress.
        .target(name: "Images", dependencies: ["Blocking", "OCI", "Registry", "ContentStore", "Archive"]),
        .target(
            name: "Slipway",
            dependencies: [
                "Blocking", "Images", "OCI", "Registry", "ContentStore", "Archive", "EStargz", "GzipIndex", "ImageTree", "SIF", "Squashfs", "CLinux",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "LazyFS",
            dependencies: [
                "Blocking", "Archive", "Images", "ImageTree", "EStargz", "GzipIndex", "OCI", "ContentStore", "CLinux", "FUSE",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "CacheServer",
            dependencies: [
                "Blocking", "OCI", "Registry", "ContentStore", "CCrypt", "CLinux", "GzipIndex",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(name: "ImageTree", dependencies: ["EStargz", "CLinux", .product(name: "Crypto", package: "swift-crypto")]),
        // Seekable indexes over ordinary gzip layers: built in one pass over a layer, read from the middle with Range.
        .target(
            name: "GzipIndex",
            dependencies: ["Archive", "EStargz", "OCI", "CZlib", .product(name: "Crypto", package: "swift-crypto")]
        ),
        // A squashfs writer of our own: libdeflate on every core, and blocks copied from an earlier image's SIF.
        .target(name: "Squashfs", dependencies: ["Blocking", "ImageTree", "CDeflate", "CLinux", .product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "SIF", dependencies: ["Blocking", "ImageTree", "Squashfs", .product(name: "Crypto", package: "swift-crypto")]),
        // containerd's snapshots service (messages, server and client stubs), generated by scripts/generate-grpc-code.
        // The part of the kubelet's CRI the tests drive containerd with (client stubs), generated by
        // scripts/generate-grpc-code from Tests/CRIAPI/cri.proto.
        .target(
            name: "CRIAPI",
            dependencies: [
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            path: "Tests/CRIAPI",
            exclude: ["cri.proto"]
        ),
        // Slipway's own service on the snapshotter's socket (`slipway prefetch --snapshotter`), generated by
        // scripts/generate-grpc-code from its prefetch.proto.
        .target(
            name: "SlipwayAPI",
            dependencies: [
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            exclude: ["prefetch.proto"]
        ),
        .target(
            name: "SnapshotsAPI",
            dependencies: [
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .target(
            name: "Snapshotter",
            dependencies: [
                "Blocking", "ContentStore", "OCI", "SnapshotsAPI", "SlipwayAPI", "LazyFS", "CLinux",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .target(
            name: "Runtime",
            dependencies: [
                "Blocking", "Images", "SIF", "LazyFS", "Archive", "OCI", "ContentStore", "CLinux",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "slipway",
            dependencies: [
                "Blocking", "Slipway", "Images", "OCI", "Registry", "ContentStore", "Archive", "EStargz", "LazyFS", "CacheServer", "SIF", "Runtime",
                "Snapshotter",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/SlipwayCLI"
        ),
        // The fuzzing campaign over every parser (scripts/fuzz, Fuzz/): one entry function per parser, the executable
        // libFuzzer drives (a replayer of saved inputs without -DFUZZING), and its declarations of libFuzzer's driver.
        .target(name: "FuzzTargets", dependencies: ["Archive", "EStargz", "GzipIndex", "SIF", "Squashfs", "OCI", "Registry", "CacheServer"]),
        .target(name: "CLibFuzzer"),
        .executableTarget(name: "slipway-fuzz", dependencies: ["FuzzTargets", "CLibFuzzer"]),
        .target(
            name: "TestSupport",
            dependencies: [
                "Blocking", "OCI", "Archive", "CLinux",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Tests/TestSupport"
        ),
        .testTarget(name: "BlockingTests", dependencies: ["Blocking", "TestSupport"]),
        .testTarget(name: "OCITests", dependencies: ["OCI", "TestSupport"]),
        .testTarget(name: "RegistryTests", dependencies: ["Registry", "TestSupport"]),
        .testTarget(name: "TestSupportTests", dependencies: ["TestSupport"]),
        .testTarget(name: "EStargzTests", dependencies: ["EStargz", "Archive", "OCI", "TestSupport"]),
        .testTarget(name: "LazyFSTests", dependencies: ["LazyFS", "ImageTree", "OCI", "TestSupport"]),
        .testTarget(name: "GzipIndexTests", dependencies: ["GzipIndex", "EStargz", "Archive", "OCI", "TestSupport"]),
        .testTarget(name: "ImageTreeTests", dependencies: ["ImageTree", "OCI", "Blocking", "TestSupport"]),
        .testTarget(
            name: "SnapshotterTests",
            dependencies: ["Snapshotter", "ContentStore", "OCI", "TestSupport"]
        ),
        .testTarget(name: "ArchiveTests", dependencies: ["Archive", "TestSupport", "CLinux"]),
        .testTarget(name: "FUSETests", dependencies: ["FUSE", "CLinux", "TestSupport"]),
        .testTarget(name: "CacheServerTests", dependencies: ["CacheServer", "OCI", "TestSupport"]),
        .testTarget(name: "SIFTests", dependencies: ["SIF", "TestSupport"]),
        .testTarget(name: "SquashfsTests", dependencies: ["Squashfs", "ImageTree", "Blocking", "TestSupport", "CLinux"]),
        .testTarget(name: "FuzzRegressionTests", dependencies: ["FuzzTargets", "TestSupport"]),
        .testTarget(name: "ContentStoreTests", dependencies: ["ContentStore", "OCI", "TestSupport"]),
        .testTarget(name: "SlipwayTests", dependencies: ["Slipway", "Images", "OCI", "ContentStore", "Archive", "Registry", "TestSupport"]),
        .testTarget(name: "RuntimeTests", dependencies: ["Runtime", "OCI", "TestSupport"]),
        .testTarget(
            name: "SnapshotsAPITests",
            dependencies: [
                "SnapshotsAPI", "TestSupport",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
            ]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "Slipway", "Images", "Registry", "ContentStore", "Archive", "OCI", "TestSupport", "CLinux", "EStargz", "GzipIndex", "LazyFS",
                "CacheServer", "SIF", "Runtime", "Snapshotter", "CRIAPI", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"), .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
            ]
        ),
    ]
)
