// swift-tools-version:6.1
// Micro-benchmarks of the online counter's hot paths, with allocation counts, using
// ordo-one/package-benchmark (as swift-nio does). A package of its own, depending on the main
// package by path, so the main build and its dependency graph are unaffected. Run with
// Benchmarks/Micro/run.sh (it sets what this needs; see docs/benchmarks.md).
import PackageDescription

let package = Package(
  name: "tenten-micro-benchmarks",
  platforms: [.macOS(.v15)],
  dependencies: [
    // Named: a path dependency is otherwise known by its directory name, which varies.
    .package(name: "tenten-platform", path: "../.."),
    // Malloc counts come from its malloc interposer; the runtime interposer (retain/release
    // counts) is not in the local mirror: see Placeholders/swift-runtime-interposer.
    .package(
      url: "https://github.com/ordo-one/package-benchmark", from: "1.38.1",
      traits: ["MallocInterposer"]),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
    .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
    .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
    .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
  ],
  targets: [
    .executableTarget(
      name: "CounterHotPaths",
      dependencies: [
        .product(name: "Benchmark", package: "package-benchmark"),
        .product(name: "PresenceStore", package: "tenten-platform"),
        .product(name: "CounterGateway", package: "tenten-platform"),
        .product(name: "ServiceKit", package: "tenten-platform"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
      ],
      path: "Benchmarks/CounterHotPaths",
      swiftSettings: [.swiftLanguageMode(.v6)],
      plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
    ),
    // The floor of the gateway's stack (issue 12): a minimal Connect server on swift-nio-http2
    // for Benchmarks/gateway-scale.sh's `floor` server. Built by
    // `swift build -c release --product H2FloorServer` here; not by CI.
    .executableTarget(
      name: "H2FloorServer",
      dependencies: [
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
      ],
      path: "Benchmarks/H2FloorServer",
      swiftSettings: [.swiftLanguageMode(.v6)]
    ),
    // The floor of the job worker's output path (issue 13): grpc-swift over mutual TLS on
    // loopback, ready-made messages, nothing else; Benchmarks/job-output.sh runs it (FLOOR=).
    // Built by `swift build -c release --product GRPCStreamFloor` here; not by CI.
    .executableTarget(
      name: "GRPCStreamFloor",
      dependencies: [
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "NIOCore", package: "swift-nio"),
        // `--aligned`: jobctl's HTTP2FrameAligner in front of the client's HTTP/2 decoder.
        .product(name: "ConnectionKit", package: "tenten-platform"),
      ],
      path: "Benchmarks/GRPCStreamFloor",
      swiftSettings: [.swiftLanguageMode(.v6)]
    ),
  ]
)
