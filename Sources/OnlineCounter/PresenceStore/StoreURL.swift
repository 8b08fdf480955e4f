internal import Foundation

/// Parsing of the `--store` URL forms, kept apart from the stores so it can be tested alone.
enum StoreURL {
  enum SSLMode: String { case disable, prefer, require }

  struct Postgres: Equatable {
    var host: String
    var port: Int
    var user: String
    var password: String?
    var database: String
    var sslMode: SSLMode
    var connectTimeout: Duration
    var poolMax: Int
    var operationTimeout: Duration
    var schema: String?
  }

  static let usage =
    "expected sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE"

  static func invalid(_ url: String, _ why: String) -> PresenceStoreError {
    // Never echo the URL itself: it may carry a password.
    PresenceStoreError(
      code: .invalidConfiguration,
      message: "invalid store URL (\(redacted(url))): \(why); \(usage)")
  }

  /// `url` with any password replaced by `***`, for messages and logs.
  static func redacted(_ url: String) -> String {
    guard var components = URLComponents(string: url), components.password != nil else {
      return url
    }
    components.password = "***"
    return components.string ?? "postgres://***"
  }

  /// The file path of a `sqlite:PATH` URL (also accepts `sqlite://PATH` with an absolute path).
  static func parseSQLite(_ url: String) throws(PresenceStoreError) -> String {
    var path = String(url.dropFirst("sqlite:".count))
    if path.hasPrefix("//") { path.removeFirst(2) }
    guard !path.isEmpty else { throw invalid(url, "missing file path") }
    return path
  }

  static func parsePostgres(_ url: String) throws(PresenceStoreError) -> Postgres {
    guard let components = URLComponents(string: url),
      let scheme = components.scheme?.lowercased(),
      scheme == "postgres" || scheme == "postgresql"
    else { throw invalid(url, "not a postgres:// URL") }
    guard let host = components.host, !host.isEmpty else { throw invalid(url, "missing host") }
    let port = components.port ?? 5432
    guard (1...65535).contains(port) else { throw invalid(url, "bad port") }
    guard let user = components.user, !user.isEmpty else { throw invalid(url, "missing user") }
    var database = components.path
    if database.hasPrefix("/") { database.removeFirst() }
    guard !database.isEmpty, !database.contains("/") else {
      throw invalid(url, "missing database name")
    }
    var result = Postgres(
      host: host, port: port, user: components.user?.removingPercentEncoding ?? user,
      password: components.password?.removingPercentEncoding,
      database: database.removingPercentEncoding ?? database, sslMode: .disable,
      connectTimeout: .seconds(2), poolMax: 10, operationTimeout: .seconds(3))
    for item in components.queryItems ?? [] {
      let value = item.value ?? ""
      switch item.name {
      case "sslmode":
        guard let mode = SSLMode(rawValue: value) else {
          throw invalid(url, "sslmode must be disable, prefer or require")
        }
        result.sslMode = mode
      case "connect_timeout":
        guard let seconds = Int(value), seconds > 0 else {
          throw invalid(url, "connect_timeout must be a positive number of seconds")
        }
        result.connectTimeout = .seconds(seconds)
      case "pool_max":
        guard let count = Int(value), count > 0 else {
          throw invalid(url, "pool_max must be a positive integer")
        }
        result.poolMax = count
      case "schema":
        guard isPlainIdentifier(value) else {
          throw invalid(url, "schema must match [a-z_][a-z0-9_]{0,62}")
        }
        result.schema = value
      case "operation_timeout_ms":
        guard let millis = Int(value), millis > 0 else {
          throw invalid(url, "operation_timeout_ms must be a positive integer")
        }
        result.operationTimeout = .milliseconds(millis)
      default:
        throw invalid(url, "unknown option \(item.name)")
      }
    }
    return result
  }

  /// An identifier that needs no quoting in SQL (so it can be spliced in safely).
  static func isPlainIdentifier(_ name: String) -> Bool {
    guard let first = name.utf8.first, name.utf8.count <= 63 else { return false }
    let lower = UInt8(ascii: "a")...UInt8(ascii: "z")
    let digit = UInt8(ascii: "0")...UInt8(ascii: "9")
    let underscore = UInt8(ascii: "_")
    guard lower.contains(first) || first == underscore else { return false }
    return name.utf8.allSatisfy { lower.contains($0) || digit.contains($0) || $0 == underscore }
  }
}
