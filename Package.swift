// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "kbuild",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "kbuild", targets: ["kbuild"]),
        .executable(name: "kbuild-sandbox", targets: ["kbuild-sandbox"]),
        .library(name: "Keg", targets: ["Keg"]),
        .library(name: "KbuildState", targets: ["KbuildState"]),
        .library(name: "SQLiteState", targets: ["SQLiteState"]),
        .library(name: "KbuildServer", targets: ["KbuildServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
    ],
    targets: [
        // System libraries through pkg-config (Debian: libzstd-dev, libgit2-dev, libarchive-dev).
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CGit2", pkgConfig: "libgit2", providers: [.apt(["libgit2-dev"])]),
        .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        // What Swift's Glibc lacks, and the one hot loop (content-defined chunking) that must be fast in debug builds too.
        .target(name: "CKbuild", cSettings: [.unsafeFlags(["-O2"])]),
        // Between clone and execve: namespaces, the overlay root, pivot_root, PID 1 (see csandbox.h).
        .target(name: "CSandbox", cSettings: [.unsafeFlags(["-O2"])]),
        // The helper kbuild posix_spawns for each sandbox: static, small, single-threaded (see its main.c).
        .executableTarget(
            name: "kbuild-sandbox",
            dependencies: ["CSandbox"],
            cSettings: [.unsafeFlags(["-O2"])],
            linkerSettings: [.unsafeFlags(["-static-executable", "-use-ld=lld"])]
        ),

        .target(
            name: "KbuildCore",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict
        ),
        .target(
            name: "Keg",
            dependencies: ["KbuildCore", "KbuildState", "CKbuild", "CZstd", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict
        ),
        .target(
            name: "OCI",
            dependencies: ["KbuildCore", "KbuildState", "Keg"],
            swiftSettings: strict
        ),
        .target(
            name: "GitSource",
            dependencies: ["KbuildCore", "Keg", "CGit2"],
            swiftSettings: strict
        ),
        .target(
            name: "Stacks",
            dependencies: ["KbuildCore", "Keg", "KbuildState", "OCI", "Sandbox"],
            swiftSettings: strict
        ),
        .target(
            name: "Builds",
            dependencies: ["KbuildCore", "Keg", "KbuildState", "OCI", "Stacks", "Sandbox", .product(name: "Yams", package: "Yams"),
                           .product(name: "NIOPosix", package: "swift-nio")],
            swiftSettings: strict
        ),
        .target(
            name: "Releases",
            dependencies: ["KbuildCore", "Keg", "KbuildState", "Builds"],
            swiftSettings: strict
        ),
        .target(
            name: "Cluster",
            dependencies: ["KbuildCore", "Keg", "KbuildState", "Builds", "Releases", "Router",
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            swiftSettings: strict
        ),
        .target(
            name: "Scheduler",
            dependencies: ["KbuildCore", "Keg", "KbuildState", "Releases", "Cluster",
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            swiftSettings: strict
        ),
        .target(
            name: "NodeAgent",
            dependencies: ["KbuildCore", "Keg", "KegRemote", "KbuildState", "Sandbox", "OCI", "Stacks", "Builds", "Releases", "Cluster", "CKbuild",
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            swiftSettings: strict
        ),
        .target(
            name: "KbuildAPI",
            dependencies: ["KbuildCore", "CKbuild", "Keg", "KbuildState", "OCI", "Builds", "Releases", "Cluster", "Scheduler", "GitGateway", "KbuildServer", "NodeAgent", "Sandbox", "Trace", "Router",
                           .product(name: "Hummingbird", package: "hummingbird"), .product(name: "HTTPTypes", package: "swift-http-types"),
                           .product(name: "NIOPosix", package: "swift-nio")],
            swiftSettings: strict
        ),
        // The dashboard: HTML pages at / on the API port, one more client of the API (KbuildClient with the session's token).
        .target(
            name: "Dashboard",
            dependencies: ["KbuildCore", "KbuildState", "KbuildServer", "KbuildClient",
                           .product(name: "Hummingbird", package: "hummingbird"), .product(name: "HummingbirdCore", package: "hummingbird"), .product(name: "HTTPTypes", package: "swift-http-types"),
                           .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict
        ),
        // The HTTP router: Host header → a healthy web process (SwiftNIO, no kbuild dependencies).
        .target(
            name: "Router",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // The proxy's hot path: its classes' dynamic exclusivity checks cost about 5% of the CPU under load
            // (benchmarks/router.sh, perf); the compile-time checks stay.
            swiftSettings: strict + [.unsafeFlags(["-enforce-exclusivity=unchecked"])]
        ),
        .executableTarget(
            name: "trace-bench",
            dependencies: ["KbuildCore", "Keg", "KbuildState", "SQLiteState", "Builds", "Releases", "Cluster"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "scheduler-bench",
            dependencies: ["KbuildCore", "Keg", "KbuildState", "SQLiteState", "EtcdState"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "router-bench",
            dependencies: ["Router", "Cluster", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"), .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        // kbuild as parts that start (typed start functions), and `kbuild up` made of them.
        .target(
            name: "KbuildSystem",
            dependencies: ["KbuildCore", "Keg", "KegRemote", "KbuildState", "SQLiteState", "Sandbox", "Builds", "Cluster", "Scheduler", "NodeAgent", "Router",
                           "KbuildAPI", "KbuildServer", "GitGateway", "Dashboard",
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"), .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        // kbuild trace: the links between records, up to the commit and down to what runs.
        .target(
            name: "Trace",
            dependencies: ["KbuildCore", "Keg", "KbuildState", "Builds", "Releases", "Cluster"],
            swiftSettings: strict
        ),
        .target(
            name: "GitGateway",
            dependencies: ["KbuildCore", "Keg", "KbuildState", "KbuildClient", "OCI", "Stacks", "Sandbox", "Builds", "GitSource", "Releases", "Cluster",
                           .product(name: "NIOPosix", package: "swift-nio")],
            swiftSettings: strict
        ),
        .target(
            name: "Sandbox",
            dependencies: ["KbuildCore", "CSandbox"],
            swiftSettings: strict
        ),
        // The state layer: refs, the records they name, their codec and the key schema (no storage).
        .target(
            name: "KbuildState",
            dependencies: ["KbuildCore"],
            swiftSettings: strict
        ),
        // The embedded ref store: one SQLite file.
        .target(
            name: "EtcdState",
            dependencies: ["KbuildCore", "KbuildState", .product(name: "AsyncHTTPClient", package: "async-http-client"),
                           .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                           .product(name: "NIOFoundationCompat", package: "swift-nio")],
            swiftSettings: strict
        ),
        .target(
            name: "SQLiteState",
            dependencies: ["KbuildCore", "KbuildState", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict
        ),
        .target(
            name: "RefStoreConformance",
            dependencies: ["KbuildCore", "KbuildState"],
            swiftSettings: strict
        ),
        .target(
            name: "KbuildServer",
            dependencies: [
                "KbuildCore", "Keg", "KbuildState", "CKbuild",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict
        ),
        // The one client of the API: typed calls for every user verb (no data dir, no Keg).
        .target(
            name: "KbuildClient",
            dependencies: ["KbuildCore", "KbuildState", .product(name: "AsyncHTTPClient", package: "async-http-client"),
                           .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "Crypto", package: "swift-crypto"),
                           .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                           .product(name: "NIOFoundationCompat", package: "swift-nio")],
            swiftSettings: strict
        ),
        .target(
            name: "KegRemote",
            dependencies: ["KbuildCore", "Keg", .product(name: "AsyncHTTPClient", package: "async-http-client"),
                           .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                           .product(name: "NIOFoundationCompat", package: "swift-nio")],
            swiftSettings: strict
        ),
        .target(
            name: "KbuildCLI",
            dependencies: [
                "KbuildCore", "EtcdState", "CKbuild", "Keg", "KegRemote", "KbuildClient", "KbuildState", "SQLiteState", "KbuildServer", "Sandbox", "OCI", "Stacks", "GitSource", "Builds", "GitGateway", "CGit2", "CArchive",
                "Releases", "Cluster", "Scheduler", "NodeAgent", "KbuildAPI", "Router", "KbuildSystem", "Trace",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "kbuild", dependencies: ["KbuildCLI"], swiftSettings: strict),
        // examples/one-machine: a deployment written with the start functions, as a user would.
        .executableTarget(
            name: "kbuild-example-one-machine",
            dependencies: ["KbuildSystem", "KbuildCore", "Keg", "KbuildState", "SQLiteState", "Sandbox", "Scheduler", "NodeAgent", "Cluster",
                           .product(name: "Logging", package: "swift-log")],
            path: "examples/one-machine",
            swiftSettings: strict
        ),

        .testTarget(name: "KegTests", dependencies: ["Keg", "KbuildCore", "KbuildState"], swiftSettings: strict),
        .testTarget(name: "GitSourceTests", dependencies: ["GitSource", "Keg", "KbuildCore", "KbuildState"], swiftSettings: strict),
        .testTarget(name: "BuildsTests", dependencies: ["Builds", "GitGateway", "KbuildCore", "Keg", "KbuildState", "SQLiteState"], swiftSettings: strict),
        .testTarget(name: "SandboxTests", dependencies: ["Sandbox", "Stacks", "Keg", "KbuildState", "SQLiteState", "KbuildCore"], swiftSettings: strict),
        .testTarget(
            name: "RouterTests",
            dependencies: [
                "Router",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "SchedulerTests", dependencies: ["Scheduler", "Cluster", "Releases", "KbuildCore", "KbuildState", "NodeAgent", "Trace", "Router"], swiftSettings: strict),
        .testTarget(name: "DashboardTests", dependencies: ["Dashboard", "KbuildServer", .product(name: "Hummingbird", package: "hummingbird"),
                                                             .product(name: "HTTPTypes", package: "swift-http-types")], swiftSettings: strict),
        .testTarget(name: "RefStoreTests", dependencies: ["KbuildState", "SQLiteState", "EtcdState", "RefStoreConformance", "KbuildCore"], swiftSettings: strict),
        .testTarget(
            name: "KbuildCLITests",
            dependencies: [
                "KbuildCore", "Keg", "KbuildServer", "KbuildState", "SQLiteState", "EtcdState", "KbuildSystem", "KbuildClient", "KbuildAPI", "RefStoreConformance",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
