import ArgumentParser
import JobWorkerProtos

/// What to run and within which limits: shared by `start` and `run`.
struct JobOptions: ParsableArguments {
  @Option(help: "CPU bandwidth in thousandths of a core (500 = half a core).")
  var cpu: UInt32?

  @Option(help: "Memory limit in bytes, or with a K/M/G suffix (256M).")
  var memory: ByteCount?

  @Option(help: "Maximum number of processes and threads.")
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

  func validate() throws {
    guard let first = command.first, !first.isEmpty else {
      throw ValidationError("missing command: put it after `--`, e.g. `jobctl run -- ls -l /`")
    }
    for entry in environment where !entry.contains("=") || entry.hasPrefix("=") {
      throw ValidationError("--env '\(entry)' must be NAME=value")
    }
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

/// A byte count with an optional binary suffix: `4096`, `64K`, `256M`, `2G`.
struct ByteCount: ExpressibleByArgument {
  var bytes: UInt64

  init?(argument: String) {
    let text = argument.uppercased().replacingOccurrences(of: "IB", with: "")
      .replacingOccurrences(of: "B", with: "")
    let multipliers: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
    var digits = Substring(text)
    var multiplier: UInt64 = 1
    if let last = digits.last, let value = multipliers[last] {
      multiplier = value
      digits = digits.dropLast()
    }
    guard let number = UInt64(digits) else { return nil }
    let (product, overflow) = number.multipliedReportingOverflow(by: multiplier)
    guard !overflow else { return nil }
    bytes = product
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
