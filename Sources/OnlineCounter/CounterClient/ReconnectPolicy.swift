import GRPCCore

/// How long a simulated client waits before it reconnects, over the next connection (so, with
/// several gateways, to another gateway), after its stream ended.
///
/// The delay is drawn with full jitter from zero to a cap that depends on how the stream ended:
///
/// - **Lost**: the stream worked (it got a ping) and then the gateway went away: it died, its
///   connection broke, it drained. The client fails over at once (jittered over
///   ``failoverSpread`` so that a dead gateway's clients do not all arrive in one instant) and
///   the backoff starts over: the other gateway is most likely fine.
/// - **Unreachable**: the attempt failed with `UNAVAILABLE` before any ping: nothing at that
///   address serves (connection refused, the channel still reconnecting, a draining gateway).
///   Nothing reached a gateway that could be burdened, so the backoff grows only to
///   ``unreachableMaxBackoff`` (1 s): the client keeps alternating to the next gateway quickly
///   while another one is alive.
/// - **Refused**: the gateway answered with something else before any ping (full, …): that
///   gateway is up and said no, so the backoff grows to ``maxBackoff`` so as not to hammer it.
/// - **Timed out**: the stream worked but the gateway ended it for want of pongs: the client
///   (or the machine it runs on) is too slow. The backoff starts over only after a stream that
///   lived ``stableAfter``, which damps the reconnect churn of an overloaded client process.
struct ReconnectPolicy: Sendable {
  var initialBackoff: Duration
  var maxBackoff: Duration
  var unreachableMaxBackoff: Duration
  var failoverSpread: Duration
  var stableAfter: Duration

  enum Ending: Equatable, Sendable {
    case lost
    case unreachable
    case refused
    case timedOut(lived: Duration)
  }

  /// Classifies an ended stream: whether it got a ping, the error it ended with (nil when the
  /// gateway ended it without one), and how long it lived.
  static func ending(receivedPings: Bool, code: RPCError.Code?, lived: Duration) -> Ending {
    if receivedPings {
      return code == .deadlineExceeded ? .timedOut(lived: lived) : .lost
    }
    return code == .unavailable ? .unreachable : .refused
  }

  /// The cap of the next delay, after `ending`; `failures` counts consecutive attempts that did
  /// not work and is updated.
  func cap(after ending: Ending, failures: inout Int) -> Duration {
    switch ending {
    case .lost:
      failures = 0
      return failoverSpread
    case .unreachable:
      failures += 1
      return exponential(failures, upTo: unreachableMaxBackoff)
    case .refused:
      failures += 1
      return exponential(failures, upTo: maxBackoff)
    case .timedOut(let lived):
      if lived >= stableAfter { failures = 0 }
      failures += 1
      return exponential(failures, upTo: maxBackoff)
    }
  }

  /// The delay to wait: full jitter over `cap`.
  static func delay(cap: Duration) -> Duration {
    .nanoseconds(Int64.random(in: 0...cap.nanoseconds))
  }

  private func exponential(_ failures: Int, upTo limit: Duration) -> Duration {
    min(limit, initialBackoff * (1 << min(max(failures - 1, 0), 20)))
  }
}

extension Duration {
  fileprivate var nanoseconds: Int64 {
    let (seconds, attoseconds) = components
    return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
  }
}
