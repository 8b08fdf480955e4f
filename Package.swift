// swift-tools-version:6.1
// One package, two systems and the kit they share. The folder tree under Sources/ mirrors the
// architecture: Kit/ (shared server plumbing), OnlineCounter/, JobWorker/, and Executables/
// (thin entry points).
import PackageDescription

let swiftSettings: [SwiftSetting] = [
  .swiftLanguageMode(.v6),
  .enableUpcomingFeature("ExistentialAny"),
  // Imports are internal unless marked `public import`: a module's imports say what its API
  // exposes (as in grpc-swift).
  .enableUpcomingFeature("InternalImportsByDefault"),
]

let grpcCore = Target.Dependency.product(name: "GRPCCore", package: "grpc-swift-2")
let grpcHTTP2 = Target.Dependency.product(
  name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport")
let grpcProtobuf = Target.Dependency.product(name: "GRPCProtobuf", package: "grpc-swift-protobuf")
let swiftProtobuf = Target.Dependency.product(name: "SwiftProtobuf", package: "swift-protobuf")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let metrics = Target.Dependency.product(name: "Metrics", package: "swift-metrics")
let tracing = Target.Dependency.product(name: "Tracing", package: "swift-distributed-tracing")
let lifecycle = Target.Dependency.product(
  name: "ServiceLifecycle", package: "swift-service-lifecycle")
let argumentParser = Target.Dependency.product(
  name: "ArgumentParser", package: "swift-argument-parser")
let nioCore = Target.Dependency.product(name: "NIOCore", package: "swift-nio")
let nioPosix = Target.Dependency.product(name: "NIOPosix", package: "swift-nio")
let nioSSL = Target.Dependency.product(name: "NIOSSL", package: "swift-nio-ssl")
let x509 = Target.Dependency.product(name: "X509", package: "swift-certificates")
let crypto = Target.Dependency.product(name: "Crypto", package: "swift-crypto")

/// Generated protobuf and gRPC code: never edited by hand (see scripts/generate-protos).
func protoTarget(_ name: String, path: String) -> Target {
  .target(
    name: name, dependencies: [grpcCore, grpcProtobuf, swiftProtobuf], path: path,
    swiftSettings: [.swiftLanguageMode(.v6)])
}

let package = Package(
  name: "tenten-platform",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "gateway", targets: ["gateway"]),
    .executable(name: "status", targets: ["status"]),
    .executable(name: "client", targets: ["client"]),
    .executable(name: "jobworker", targets: ["jobworker"]),
    .executable(name: "jobctl", targets: ["jobctl"]),
    .executable(name: "jobinit", targets: ["jobinit"]),
    .executable(name: "demo", targets: ["demo"]),
    // For Benchmarks/Micro, a package of its own that depends on this one by path (the
    // micro-benchmarks stay out of this package's build).
    .library(name: "PresenceStore", targets: ["PresenceStore"]),
    .library(name: "CounterGateway", targets: ["CounterGateway"]),
    .library(name: "ServiceKit", targets: ["ServiceKit"]),
    .library(name: "ConnectionKit", targets: ["ConnectionKit"]),
  ],
  dependencies: [
    .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
    .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
    .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
    .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
    .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
    .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
    .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
    .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
    .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
    .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
    // OTLP over gRPC only: the HTTP exporter would add async-http-client to every build.
    .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0", traits: ["OTLPGRPC"]),
    // Tests only: runs programs (server binaries, jobctl, grpcurl, openssl) without blocking.
    .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
  ],
  targets: [
    // MARK: Kit: plumbing every server shares.
    protoTarget("ServiceKitProtos", path: "Sources/Kit/ServiceKitProtos"),
    .target(
      name: "ServiceKit",
      dependencies: [
        "ConnectionKit", "ServiceKitProtos", "TLSKit", grpcCore, grpcHTTP2, grpcProtobuf,
        swiftProtobuf, logging, metrics, lifecycle, argumentParser, nioCore, nioPosix, tracing,
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "Prometheus", package: "swift-prometheus"),
      ],
      path: "Sources/Kit/ServiceKit", swiftSettings: swiftSettings),
    // Admission control for every listener: connection caps, handshake deadline.
    .target(
      name: "ConnectionKit",
      dependencies: [
        grpcHTTP2, logging, metrics, nioCore, nioPosix,
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
      ],
      path: "Sources/Kit/ConnectionKit", swiftSettings: swiftSettings),
    .target(
      name: "TLSKit",
      dependencies: [
        "ConnectionKit", grpcCore, grpcHTTP2, logging, nioCore, nioPosix, nioSSL, x509, crypto,
        .product(name: "NIOTLS", package: "swift-nio"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "SwiftASN1", package: "swift-asn1"),
      ],
      path: "Sources/Kit/TLSKit", swiftSettings: swiftSettings),
    .target(
      name: "Telemetry",
      dependencies: [
        "ServiceKit", argumentParser, logging, lifecycle, tracing,
        .product(name: "OTel", package: "swift-otel"),
      ],
      path: "Sources/Kit/Telemetry", swiftSettings: swiftSettings),

    // MARK: Online counter.
    protoTarget("CounterProtos", path: "Sources/OnlineCounter/CounterProtos"),
    .target(
      name: "CounterModel", path: "Sources/OnlineCounter/CounterModel",
      swiftSettings: swiftSettings),
    .target(
      name: "PresenceStore",
      dependencies: [
        logging, metrics, lifecycle, nioSSL, tracing, .product(name: "GRDB", package: "GRDB.swift"),
        .product(name: "PostgresNIO", package: "postgres-nio"),
      ],
      path: "Sources/OnlineCounter/PresenceStore", swiftSettings: swiftSettings),
    .target(
      name: "CounterStatus",
      dependencies: [
        "CounterModel", "CounterProtos", "ConnectionKit", "PresenceStore", "ServiceKit", "TLSKit",
        grpcCore, grpcHTTP2, logging, metrics, lifecycle, nioCore, swiftProtobuf, tracing,
        // Cached counts answered on the HTTP/2 stream's event loop (CachedFetchHandler).
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
      ],
      path: "Sources/OnlineCounter/CounterStatus", swiftSettings: swiftSettings),
    .target(
      name: "CounterGateway",
      dependencies: [
        "CounterModel", "CounterProtos", "ConnectionKit", "ServiceKit", "TLSKit", grpcCore,
        grpcHTTP2, logging, metrics, lifecycle, nioCore, nioPosix, nioSSL, swiftProtobuf,
        tracing,
        // The gateway's port is our own HTTP/2 pipeline (GatewayListener): `Connect` without
        // a task per stream, every other method passed to grpc-swift in process.
        .product(name: "GRPCInProcessTransport", package: "grpc-swift-2"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
      ],
      path: "Sources/OnlineCounter/CounterGateway", swiftSettings: swiftSettings),
    .target(
      name: "CounterClient",
      dependencies: ["CounterProtos", "ServiceKit", "TLSKit", grpcCore, grpcHTTP2, logging],
      path: "Sources/OnlineCounter/CounterClient", swiftSettings: swiftSettings),

    // MARK: Job worker.
    protoTarget("JobWorkerProtos", path: "Sources/JobWorker/JobWorkerProtos"),
    .target(name: "CJobInit", path: "Sources/JobWorker/CJobInit"),
    // mallopt(3), which Swift's Glibc module does not import: `jobctl`'s allocator thresholds.
    .target(name: "CMalloc", path: "Sources/Kit/CMalloc"),
    // PID 1 of every job, exec'd by the worker's cloned child: C only, linked statically
    // against glibc. swiftc links every executable: -nostartfiles leaves out the Swift image
    // registration (swiftrt.o), so nothing pulls in the Swift runtime, and -static-executable
    // makes it static, a few private pages per job (see docs/job-worker.md, "Trade-offs").
    .executableTarget(
      name: "jobinit", dependencies: ["CJobInit"], path: "Sources/JobWorker/jobinit",
      linkerSettings: [.unsafeFlags(["-static-executable", "-nostartfiles"])]),
    .target(
      name: "JobWorkerCore",
      dependencies: [
        "CJobInit", logging, metrics,
      ],
      path: "Sources/JobWorker/JobWorkerCore", swiftSettings: swiftSettings),
    .target(
      name: "JobWorkerServer",
      dependencies: [
        "ConnectionKit", "JobWorkerCore", "JobWorkerProtos", "ServiceKit", "TLSKit", grpcCore,
        grpcHTTP2, logging, metrics, lifecycle, nioCore, swiftProtobuf,
      ],
      path: "Sources/JobWorker/JobWorkerServer", swiftSettings: swiftSettings),
    .target(
      name: "JobCtl",
      dependencies: [
        "JobWorkerProtos", "ConnectionKit", "TLSKit", "ServiceKit", "CMalloc", grpcCore,
        grpcHTTP2, argumentParser, logging,
      ],
      path: "Sources/JobWorker/JobCtl", swiftSettings: swiftSettings),

    // MARK: Executables: argument parsing, bootstrap, run.
    .executableTarget(
      name: "gateway",
      dependencies: ["CounterGateway", "ServiceKit", "Telemetry", "TLSKit", argumentParser],
      path: "Sources/Executables/gateway", swiftSettings: swiftSettings),
    .executableTarget(
      name: "status",
      dependencies: [
        "CounterStatus", "PresenceStore", "ServiceKit", "Telemetry", "TLSKit", argumentParser,
      ],
      path: "Sources/Executables/status", swiftSettings: swiftSettings),
    .executableTarget(
      name: "client", dependencies: ["CounterClient", "ServiceKit", "TLSKit", argumentParser],
      path: "Sources/Executables/client", swiftSettings: swiftSettings),
    .executableTarget(
      name: "jobworker",
      dependencies: [
        "JobWorkerServer", "JobWorkerCore", "ServiceKit", "TLSKit", argumentParser, logging,
        metrics,
        lifecycle, .product(name: "Prometheus", package: "swift-prometheus"),
      ],
      path: "Sources/Executables/jobworker", swiftSettings: swiftSettings),
    .executableTarget(
      name: "jobctl", dependencies: ["JobCtl", argumentParser],
      path: "Sources/Executables/jobctl", swiftSettings: swiftSettings),
    .executableTarget(
      name: "demo",
      dependencies: [
        "CounterGateway", "CounterStatus", "CounterClient", "PresenceStore", "JobWorkerServer",
        "JobWorkerCore", "JobCtl", "TLSKit", "ServiceKit", argumentParser,
        // Not linked: `swift run demo` builds the jobs' init next to the demo, where the job
        // worker looks for it.
        "jobinit",
      ],
      path: "Sources/Executables/demo", swiftSettings: swiftSettings),

    // MARK: Tests: one target per library; integration tests need root, processes, PostgreSQL.
    .target(
      name: "TestSupport",
      dependencies: [
        "TLSKit", logging, lifecycle, .product(name: "Subprocess", package: "swift-subprocess"),
        .product(name: "SystemPackage", package: "swift-system"),
      ],
      path: "Tests/Support", swiftSettings: swiftSettings),
    .testTarget(
      name: "ServiceKitTests",
      dependencies: [
        "ConnectionKit", "ServiceKit", "ServiceKitProtos", "CounterProtos", "JobWorkerProtos",
        "TestSupport", "TLSKit", grpcCore, grpcHTTP2,
        nioCore, nioPosix, crypto, logging, swiftProtobuf,
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "Prometheus", package: "swift-prometheus"),
      ],
      path: "Tests/Kit/ServiceKitTests", swiftSettings: swiftSettings),
    .testTarget(
      name: "ConnectionKitTests",
      dependencies: [
        "ConnectionKit", "TestSupport", grpcHTTP2, logging, nioCore, nioPosix,
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
      ],
      path: "Tests/Kit/ConnectionKitTests", swiftSettings: swiftSettings),
    .testTarget(
      name: "PresenceStoreTests",
      dependencies: [
        "PresenceStore", "TestSupport", logging, lifecycle,
        .product(name: "PostgresNIO", package: "postgres-nio"),
      ],
      path: "Tests/OnlineCounter/PresenceStoreTests", swiftSettings: swiftSettings),
    .testTarget(
      name: "OnlineCounterTests",
      dependencies: [
        "CounterModel", "CounterStatus", "CounterGateway", "CounterClient", "CounterProtos",
        "PresenceStore", "ServiceKit", "TLSKit", "TestSupport", grpcCore, grpcHTTP2, logging,
        tracing, .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
        .product(name: "MetricsTestKit", package: "swift-metrics"), nioCore,
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
      ],
      path: "Tests/OnlineCounter/OnlineCounterTests", swiftSettings: swiftSettings),
    .testTarget(
      name: "JobWorkerCoreTests", dependencies: ["JobWorkerCore", "TestSupport", logging],
      path: "Tests/JobWorker/JobWorkerCoreTests", swiftSettings: swiftSettings),
    .testTarget(
      name: "JobWorkerServerTests",
      dependencies: [
        "JobWorkerServer", "JobWorkerCore", "JobCtl", "TLSKit", "JobWorkerProtos", "ServiceKit",
        "TestSupport", "CMalloc",
        grpcCore, grpcHTTP2, nioCore, nioPosix, nioSSL, x509, crypto, logging,
      ],
      path: "Tests/JobWorker/JobWorkerServerTests", swiftSettings: swiftSettings),
  ]
)
