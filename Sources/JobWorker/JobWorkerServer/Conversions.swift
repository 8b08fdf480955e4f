import Foundation
public import GRPCCore
public import JobWorkerCore
import JobWorkerProtos
import SwiftProtobuf

extension Jobworker_V1_JobStatus {
  init(_ status: JobStatus) {
    self.init()
    jobID = status.id.description
    owner = status.owner
    command = status.command
    args = status.arguments
    switch status.state {
    case .running:
      state = .running
    case .exited(let code):
      state = .exited
      exitCode = code
    case .signaled(let signal):
      state = .signaled
      self.signal = signal
    case .stopped(let signal):
      state = .stopped
      self.signal = signal
    case .oomKilled:
      state = .oomKilled
      signal = SIGKILL
    }
    startedAt = Google_Protobuf_Timestamp(date: status.startedAt)
    if let endedAt = status.endedAt { self.endedAt = Google_Protobuf_Timestamp(date: endedAt) }
    usage = .with { usage in
      usage.cpuUsageUsec = status.usage.cpuMicros
      usage.memoryPeakBytes = status.usage.memoryPeakBytes
      usage.ioReadBytes = status.usage.ioReadBytes
      usage.ioWriteBytes = status.usage.ioWriteBytes
    }
    limits = Jobworker_V1_ResourceLimits(status.limits)
    outputBytes = status.outputBytes
    outputTruncated = status.outputTruncated
    outputTruncatedReason = status.outputLoss?.description ?? ""
  }
}

extension Jobworker_V1_ResourceLimits {
  init(_ limits: ResourceLimits) {
    self.init()
    cpuMillicores = limits.cpuMillicores ?? 0
    memoryBytes = limits.memoryBytes ?? 0
    maxPids = limits.maxPids ?? 0
    io = limits.io.map { io in
      .with { proto in
        proto.device = io.device
        proto.readBytesPerSecond = io.readBytesPerSecond ?? 0
        proto.writeBytesPerSecond = io.writeBytesPerSecond ?? 0
        proto.readIops = io.readIOPS ?? 0
        proto.writeIops = io.writeIOPS ?? 0
      }
    }
  }
}

extension ResourceLimits {
  /// Proto zeros mean "the server's default", which the library spells nil.
  init(_ proto: Jobworker_V1_ResourceLimits) {
    func orNil<T: BinaryInteger>(_ value: T) -> T? { value == 0 ? nil : value }
    self.init(
      cpuMillicores: orNil(proto.cpuMillicores), memoryBytes: orNil(proto.memoryBytes),
      maxPids: orNil(proto.maxPids),
      io: proto.io.map { io in
        IOLimit(
          device: io.device, readBytesPerSecond: orNil(io.readBytesPerSecond),
          writeBytesPerSecond: orNil(io.writeBytesPerSecond), readIOPS: orNil(io.readIops),
          writeIOPS: orNil(io.writeIops))
      })
  }
}

/// Handlers let library errors propagate: gRPC turns them into this status, so clients never
/// see `unknown`.
extension JobError: RPCErrorConvertible {
  /// A program that cannot start (missing, not executable) is a precondition of the host,
  /// not a malformed request.
  public var rpcErrorCode: RPCError.Code {
    switch code {
    case .notFound: .notFound
    case .invalidArgument: .invalidArgument
    case .failedToStart: .failedPrecondition
    case .resourceExhausted: .resourceExhausted
    case .unavailable: .unavailable
    default: .internalError
    }
  }

  public var rpcErrorMessage: String { message }
}
