public import NIOCore

// The gateway's per-client hot paths, reachable by the micro-benchmarks
// (`Benchmarks/Micro`, a package of its own) without making the types behind them public API:
// `@_spi(Benchmarks) import CounterGateway` sees these two entry points, nothing else does.
extension Gateway {
  /// The handler the gateway's port puts on every HTTP/2 stream (``ConnectStreamHandler``),
  /// for a benchmark to drive on a channel of its own: request headers open a `Connect` call
  /// (the session joins this gateway's scheduler), DATA frames carry pongs, and the pings the
  /// scheduler sends come out as DATA frames. `slot` is the scheduler's slot (0–99) that
  /// pings the stream: the listener gives all streams of a connection one slot.
  @_spi(Benchmarks)
  public func makeStreamHandler(
    slot: Int = 0, maxMessageBytes: Int = 1024, maxUnsentPings: Int = 8
  ) -> any ChannelHandler {
    ConnectStreamHandler(
      gateway: self,
      limits: .init(maxMessageBytes: maxMessageBytes, maxUnsentPings: maxUnsentPings),
      slot: slot)
  }

  /// One pass of the ping timer over `ticks` (each tick one of the 100 slots of 10 ms): every
  /// session there is pinged (its stream's event loop gets the batch) or ended if silent past
  /// the pong timeout at `now`. Returns the pings sent.
  @_spi(Benchmarks)
  @discardableResult
  public func visitPingSlots(_ ticks: ClosedRange<Int64>, now: ContinuousClock.Instant) -> Int {
    scheduler.visit(ticks: ticks, now: now).sent
  }
}
