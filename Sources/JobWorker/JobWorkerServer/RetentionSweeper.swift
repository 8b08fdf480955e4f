public import Foundation
public import JobWorkerCore
import Logging
public import ServiceLifecycle

/// Forgets ended jobs past the manager's retention period or over its cap on stored output,
/// every `interval` (`JobManager.sweep(now:)`), until graceful shutdown. The manager sweeps
/// once itself when it starts; this keeps a long-running worker's data directory bounded.
public struct RetentionSweeper: Service {
  private let manager: JobManager
  private let interval: Duration
  private let now: @Sendable () -> Date

  /// - Parameter now: the wall clock the retention period is measured against (the jobs' end
  ///   times are wall-clock times); tests inject their own.
  public init(
    manager: JobManager, interval: Duration = .seconds(60),
    now: @escaping @Sendable () -> Date = Date.init
  ) {
    self.manager = manager
    self.interval = interval
    self.now = now
  }

  /// One round; the manager logs what it removed.
  @discardableResult
  public func sweepOnce() -> RetentionSweep {
    manager.sweep(now: now())
  }

  public func run() async throws {
    await cancelWhenGracefulShutdown {
      while !Task.isCancelled {
        do {
          try await Task.sleep(for: interval)
        } catch {
          return
        }
        sweepOnce()
      }
    }
  }
}
