/// Polls `check` every `interval` until it holds or `timeout` passes; returns whether it
/// held. The one way tests wait for a state they cannot be told about: the timeout is a
/// bound on how long a failing test takes, never a performance claim, so make it generous.
/// The default, 30 s, fits a starved host: with a parallel build beside the suite, a TLS
/// client's first connection took over 10 s twice in five runs (docs/benchmarks.md,
/// "Test-suite reliability").
public func eventually(
  timeout: Duration = .seconds(30), interval: Duration = .milliseconds(20),
  _ check: () async throws -> Bool
) async rethrows -> Bool {
  let clock = ContinuousClock()
  let deadline = clock.now + timeout
  while clock.now < deadline {
    if try await check() { return true }
    try? await Task.sleep(for: interval)
  }
  return try await check()
}
