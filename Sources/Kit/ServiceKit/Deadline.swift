/// Raised by ``withDeadline(_:operation:)`` when the operation did not finish in time.
public struct DeadlineExceededError: Error, CustomStringConvertible {
  public var limit: Duration
  public var description: String { "operation did not complete within \(limit)" }
}

/// Runs `operation`, cancelling it and throwing ``DeadlineExceededError`` if it takes longer
/// than `limit`. The operation must honour cancellation for the deadline to bite.
public func withDeadline<T: Sendable>(
  _ limit: Duration,
  operation: @escaping @Sendable () async throws -> T
) async throws -> T {
  try await withThrowingTaskGroup(of: T.self) { group in
    group.addTask { try await operation() }
    group.addTask {
      try await Task.sleep(for: limit)
      throw DeadlineExceededError(limit: limit)
    }
    defer { group.cancelAll() }
    guard let first = try await group.next() else { throw CancellationError() }
    return first
  }
}
