public import Tracing

/// A store whose reads and writes are spans (`presence.store.write`, `.read`, `.prune`)
/// carrying the database system and the sizes involved; errors are recorded on the span.
///
/// ``makePresenceStore(url:logger:countCacheMaxAge:tracer:)`` puts it under the cache, so a
/// read answered from the cache has no store span: the spans show real database work.
public final class TracedPresenceStore: PresenceStore {
  public let base: any PresenceStore
  private let system: String
  private let tracer: any Tracer

  /// - Parameter system: the OpenTelemetry `db.system` value, e.g. `postgresql` or `sqlite`.
  public init(base: any PresenceStore, system: String, tracer: any Tracer) {
    self.base = base
    self.system = system
    self.tracer = tracer
  }

  public func run() async throws {
    try await base.run()
  }

  public func record(_ records: [PresenceRecord]) async throws {
    try await tracer.withSpan("presence.store.write", ofKind: .client) { span in
      span.attributes["db.system"] = system
      span.attributes["presence.records"] = records.count
      try await base.record(records)
    }
  }

  public func countOnline(sinceMillis: Int64) async throws -> UInt64 {
    try await tracer.withSpan("presence.store.read", ofKind: .client) { span in
      span.attributes["db.system"] = system
      let count = try await base.countOnline(sinceMillis: sinceMillis)
      span.attributes["presence.online_users"] = Int(clamping: count)
      return count
    }
  }

  public func prune(beforeMillis: Int64) async throws -> Int {
    try await tracer.withSpan("presence.store.prune", ofKind: .client) { span in
      span.attributes["db.system"] = system
      let pruned = try await base.prune(beforeMillis: beforeMillis)
      span.attributes["presence.pruned"] = pruned
      return pruned
    }
  }
}
