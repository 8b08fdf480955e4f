public import CounterModel
public import Logging
public import PresenceStore
public import ServiceLifecycle

/// Deletes users last seen before the window, every `interval`, so that the store holds only
/// users that can still be counted. Pruning is an optimisation: the count query filters by
/// time anyway, so a failed prune only costs space and is retried on the next round.
public struct PresencePruner: Service {
  private let store: any PresenceStore
  private let clock: MillisClock
  private let interval: Duration
  private let logger: Logger

  public init(
    store: any PresenceStore, clock: @escaping MillisClock = systemMillisClock,
    interval: Duration = .seconds(30), logger: Logger
  ) {
    self.store = store
    self.clock = clock
    self.interval = interval
    self.logger = logger
  }

  /// One round: deletes everything older than the window; returns how many rows went.
  @discardableResult
  public func pruneOnce() async throws -> Int {
    try await store.prune(beforeMillis: clock() - onlineWindowMillis)
  }

  public func run() async throws {
    await cancelWhenGracefulShutdown {
      while !Task.isCancelled {
        do {
          let deleted = try await pruneOnce()
          if deleted > 0 {
            logger.debug("pruned expired users", metadata: ["status.pruned": "\(deleted)"])
          }
        } catch is CancellationError {
          return
        } catch {
          logger.warning("prune failed", metadata: ["error": "\(error)"])
        }
        try? await Task.sleep(for: interval)
      }
    }
  }
}
