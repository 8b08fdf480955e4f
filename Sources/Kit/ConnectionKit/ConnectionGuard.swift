public import Logging
import Metrics
public import NIOCore
import NIOPosix
import Synchronization

/// Enforces ``ConnectionLimits`` on one listener: counts the connections it accepts, closes
/// those over a cap before any TLS or HTTP/2 work is done for them, and closes those that do
/// not complete their handshake in time.
///
/// A listener factory installs it in two places (``PlaintextListenerFactory`` and TLSKit's
/// `TLSListenerFactory` both do): ``addAdmissionHandler(to:)`` in the server channel, ahead
/// of everything else, and ``addHandshakeDeadline(to:)`` in each accepted channel, right where
/// the decrypted HTTP/2 bytes begin.
///
/// Refusals are counted in `server_connections_refused_total{server,reason}` and logged at
/// most once per 10 s, as counts (a flood of refusals must not become a flood of log lines).
/// Open connections are the gauge `server_connections_open{server}`. As a burst of at least
/// 1,000 connections drains, freed heap memory is handed back to the operating system (see
/// ``MemoryTrim``), so a flood does not leave the process's RSS at its peak.
public final class ConnectionGuard: Sendable {
  /// The limits enforced.
  public let limits: ConnectionLimits
  private let name: String
  private let logger: Logger
  private let state: Mutex<AdmissionState>
  private let openGauge: Gauge
  private let refused: [Refusal: Counter]

  /// - Parameters:
  ///   - name: The server's name in logs and metrics (`gateway`, `status`, …).
  ///   - limits: What to enforce.
  ///   - logger: Where refusals and memory trims are logged (at notice and info).
  public convenience init(
    name: String = "grpc", limits: ConnectionLimits = .init(),
    logger: Logger = Logger(label: "ConnectionKit") { _ in SwiftLogNoOpLogHandler() }
  ) {
    self.init(name: name, state: AdmissionState(limits: limits), logger: logger)
  }

  init(name: String, state: AdmissionState, logger: Logger) {
    self.limits = state.limits
    self.name = name
    self.logger = logger
    self.state = Mutex(state)
    self.openGauge = Gauge(label: "server_connections_open", dimensions: [("server", name)])
    var refused: [Refusal: Counter] = [:]
    for reason in Refusal.allCases {
      refused[reason] = Counter(
        label: "server_connections_refused_total",
        dimensions: [("server", name), ("reason", reason.rawValue)])
    }
    self.refused = refused
  }

  /// Connections admitted and not yet closed.
  public var openConnections: Int { state.withLock { $0.open } }

  /// Adds the handler that admits or refuses each accepted connection. Call it first in the
  /// bootstrap's `serverChannelInitializer` (on the server channel's event loop), so that a
  /// refused connection never reaches gRPC's accept machinery.
  public func addAdmissionHandler(to serverChannel: any Channel) throws {
    try serverChannel.pipeline.syncOperations.addHandler(AdmissionHandler(guard: self))
  }

  /// Adds the handshake deadline to an accepted connection's pipeline (on its event loop):
  /// after the TLS handler, if any, and before gRPC's HTTP/2 handlers, i.e. where the bytes
  /// it sees are the HTTP/2 client preface.
  public func addHandshakeDeadline(to channel: any Channel) throws {
    try channel.pipeline.syncOperations.addHandler(
      HandshakeDeadlineHandler(
        timeout: TimeAmount(limits.handshakeTimeout), onTimeout: { [self] in handshakeTimedOut() }
      ))
  }

  /// Counts `child` if it is within the caps and returns true; else closes it.
  fileprivate func admit(_ child: any Channel) -> Bool {
    let address = Self.key(child.remoteAddress)
    let (action, open) = state.withLock { ($0.admit(address: address, now: .now()), $0.open) }
    switch action {
    case .admit:
      openGauge.record(open)
      child.closeFuture.whenComplete { [self] _ in release(address: address) }
      return true
    case .refuse(let reason, let report):
      refused[reason]?.increment()
      child.close(promise: nil)
      apply(report, eventLoop: child.eventLoop)
      return false
    }
  }

  private func release(address: String) {
    let (trim, open) = state.withLock { ($0.release(address: address, now: .now()), $0.open) }
    openGauge.record(open)
    if trim { MemoryTrim.trimInBackground(openConnections: open, server: name, logger: logger) }
  }

  private func handshakeTimedOut() {
    refused[.handshakeTimeout]?.increment()
    // The event loop that runs the flush does not matter: any one of the group will do.
    apply(state.withLock { $0.handshakeTimedOut(now: .now()) }, eventLoop: nil)
  }

  private func apply(_ action: AdmissionState.ReportAction, eventLoop: (any EventLoop)?) {
    switch action {
    case .log(let report):
      log(report)
    case .flush(let deadline):
      let loop = eventLoop ?? ProcessEventLoops.group.any()
      loop.scheduleTask(deadline: deadline) { [self] in
        if let report = state.withLock({ $0.flushReport(now: .now()) }) { log(report) }
      }
    case .none:
      break
    }
  }

  private func log(_ report: AdmissionState.Report) {
    var metadata: Logger.Metadata = [
      "server.name": "\(name)", "connection.open": "\(report.open)",
    ]
    for (reason, count) in report.refused.sorted(by: { $0.key < $1.key }) {
      metadata["connection.closed.\(reason.rawValue)"] = "\(count)"
    }
    logger.notice(
      "closed connections over limits (counts since the last such line)", metadata: metadata)
  }

  /// The per-address key: the IP address alone (clients' ports differ).
  static func key(_ address: SocketAddress?) -> String {
    guard let address else { return "unknown" }
    return address.ipAddress ?? address.description
  }
}

/// In the server channel: reads are accepted child channels, not yet registered or
/// initialized; those over a cap are closed here and not passed on.
private final class AdmissionHandler: ChannelInboundHandler {
  typealias InboundIn = any Channel
  typealias InboundOut = any Channel

  private let guardian: ConnectionGuard

  init(guard guardian: ConnectionGuard) { self.guardian = guardian }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    if guardian.admit(unwrapInboundIn(data)) { context.fireChannelRead(data) }
  }
}
