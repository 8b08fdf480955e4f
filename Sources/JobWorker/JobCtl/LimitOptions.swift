import ArgumentParser
import Foundation
import JobWorkerProtos
import ServiceKit

/// What to run and within which limits: shared by `start` and `run`.
struct JobOptions: ParsableArguments {
  @Option(help: "CPU bandwidth in thousandths of a core (500 = half a core); at least 1.")
  var cpu: UInt32?

  @Option(help: "Memory limit in bytes, or with a K/M/G suffix (256M).")
  var memory: ByteCount?

  @Option(
    help: """
      Maximum number of processes and threads; at least \(Self.minimumPids) (the job's init and \
      its program).
      """)
  var pids: UInt32?

  @Option(
    name: .customLong("io-read"),
    help: "Disk read limit DEVICE=BYTES/s, e.g. /dev/vda=10M (repeatable).")
  var ioRead: [DeviceRate] = []

  @Option(name: .customLong("io-write"), help: "Disk write limit DEVICE=BYTES/s (repeatable).")
  var ioWrite: [DeviceRate] = []

  @Option(name: .customLong("env"), help: "Environment entry NAME=value for the job (repeatable).")
  var environment: [String] = []

  @Option(name: .customLong("workdir"), help: "Working directory of the job (default /).")
  var workingDirectory: String?

  @Argument(parsing: .postTerminator, help: "The command and its arguments, after `--`.")
  var command: [String] = []

  /// The fewest processes a job can start with: the job's init (pid 1 of its namespace,
  /// which stays to reap) and the program it forks. With 1, the fork fails and the job can
  /// never start (`forking the program: Resource temporarily unavailable`).
  static let minimumPids: UInt32 = 2

  /// The largest request message the job worker accepts (`JobWorkerServer`'s
  /// `maxRequestBytes`, 64 KiB). The server answers a larger one `RESOURCE_EXHAUSTED` naming
  /// the limit; `jobctl` refuses it before sending, so nothing is uploaded in vain.
  static let maxRequestBytes = 64 * 1024

  func validate() throws {
    guard let first = command.first, !first.isEmpty else {
      throw ValidationError("missing command: put it after `--`, e.g. `jobctl run -- ls -l /`")
    }
    for entry in environment where !entry.contains("=") || entry.hasPrefix("=") {
      throw ValidationError("--env '\(entry.prefix(64))' must be NAME=value")
    }
    // The API spells "the server's default" as 0, so an explicit 0 would silently become the
    // default instead of what was asked for.
    if cpu == 0 {
      throw ValidationError(
        "--cpu must be at least 1 (thousandths of a core); omit it for the server's default")
    }
    if memory?.bytes == 0 {
      throw ValidationError("--memory must be more than 0; omit it for the server's default")
    }
    if let pids, pids < Self.minimumPids {
      throw ValidationError(
        "--pids must be at least \(Self.minimumPids): the job's init and its program are two "
          + "processes; omit it for the server's default")
    }
    for (flag, rates) in [("--io-read", ioRead), ("--io-write", ioWrite)] {
      for rate in rates where rate.bytesPerSecond == 0 {
        throw ValidationError("\(flag) \(rate.device)=0: the rate must be more than 0")
      }
    }
  }

  /// ``request``, or an error naming the limit when it is larger than the server accepts.
  func checkedRequest() throws -> Jobworker_V1_StartJobRequest {
    let request = request
    let size = try request.serializedBytes() as [UInt8]
    guard size.count <= Self.maxRequestBytes else {
      let limit = Printer.bytes(UInt64(Self.maxRequestBytes))
      throw JobCtlError(
        "the job's command, arguments, environment and limits make a request of "
          + "\(Printer.bytes(UInt64(size.count))); the job worker accepts at most \(limit) per "
          + "request (and at most 32 KiB of command, arguments, environment and working "
          + "directory, in 1024 entries): pass large inputs in a file the job reads")
    }
    return request
  }

  var request: Jobworker_V1_StartJobRequest {
    .with { request in
      request.command = command[0]
      request.args = Array(command.dropFirst())
      request.env = environment
      request.workingDirectory = workingDirectory ?? ""
      request.limits = .with { limits in
        limits.cpuMillicores = cpu ?? 0
        limits.memoryBytes = memory?.bytes ?? 0
        limits.maxPids = pids ?? 0
        var devices: [String: Jobworker_V1_IOLimit] = [:]
        var order: [String] = []
        for rate in ioRead {
          if devices[rate.device] == nil { order.append(rate.device) }
          devices[rate.device, default: .with { $0.device = rate.device }].readBytesPerSecond =
            rate.bytesPerSecond
        }
        for rate in ioWrite {
          if devices[rate.device] == nil { order.append(rate.device) }
          devices[rate.device, default: .with { $0.device = rate.device }].writeBytesPerSecond =
            rate.bytesPerSecond
        }
        limits.io = order.compactMap { devices[$0] }
      }
    }
  }
}

/// `DEVICE=RATE` for disk limits.
struct DeviceRate: ExpressibleByArgument {
  var device: String
  var bytesPerSecond: UInt64

  init?(argument: String) {
    guard let equals = argument.lastIndex(of: "="),
      let rate = ByteCount(argument: String(argument[argument.index(after: equals)...]))
    else { return nil }
    device = String(argument[..<equals])
    bytesPerSecond = rate.bytes
    guard !device.isEmpty else { return nil }
  }
}

/// Job ids as the server makes them: UUIDs.
enum JobIDArgument {
  /// Refuses what cannot be a job id before sending it (a 100 KB "id" would exceed the
  /// server's request limit and end in a reset stream instead of an answer).
  static func check(_ id: String) throws {
    guard UUID(uuidString: id) == nil else { return }
    let shown = id.count > 64 ? id.prefix(64) + "…" : Substring(id)
    throw JobCtlError(
      "job id '\(shown)' is not a UUID; use an id that `jobctl start` or `jobctl list` printed")
  }
}
