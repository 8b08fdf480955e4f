internal import Foundation
public import Logging
public import ServiceLifecycle

/// Runs `services` in one `ServiceGroup` while `body` runs, then shuts them down gracefully,
/// as production does on SIGTERM (in reverse order); `body` may also shut them down earlier
/// (`triggerGracefulShutdown()`). Returns once every service has ended. When `body` throws,
/// the group is shut down and cancelled, so that a failing test does not wait on a drain.
public func withServiceGroup<T: Sendable>(
  _ services: [any Service], logger: Logger, _ body: (ServiceGroup) async throws -> T
) async throws -> T {
  let group = ServiceGroup(
    configuration: .init(
      services: services.map { .init(service: $0) }, gracefulShutdownSignals: [],
      logger: logger))
  return try await withThrowingTaskGroup(of: Void.self) { tasks in
    tasks.addTask { try await group.run() }
    do {
      let result = try await body(group)
      await group.triggerGracefulShutdown()
      try await tasks.waitForAll()
      return result
    } catch {
      await group.triggerGracefulShutdown()
      tasks.cancelAll()
      // A service's own failure (a server that could not bind, a store that would not open)
      // is what explains the body's error (say, no listening address): show it.
      do {
        try await tasks.waitForAll()
      } catch let failure where !(failure is CancellationError) {
        FileHandle.standardError.write(
          Data("services failed while the test body threw \(error): \(failure)\n".utf8))
      } catch {}
      throw error
    }
  }
}
