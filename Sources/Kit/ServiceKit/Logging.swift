import ArgumentParser
import Foundation
import Logging

/// How log lines are written to standard error.
public enum LogFormat: String, CaseIterable, Sendable, ExpressibleByArgument {
  /// One human-readable line per event: `2026-11-23T09:00:00Z info gateway: message key=value`.
  case text
  /// One JSON object per line, for log shippers.
  case json
}

/// Logging flags shared by every executable: `--log-level` and `--log-format`, with the
/// environment twins `LOG_LEVEL` and `LOG_FORMAT`.
public struct LoggingOptions: ParsableArguments, Sendable {
  @Option(help: "Minimum level logged: trace, debug, info, notice, warning, error, critical (env: LOG_LEVEL).")
  public var logLevel: Logger.Level = Environment.value("LOG_LEVEL", default: .info)

  @Option(help: "Log line format: text or json (env: LOG_FORMAT).")
  public var logFormat: LogFormat = Environment.value("LOG_FORMAT", default: .text)

  public init() {}

  /// Bootstraps the process-wide logging system. Call once, first thing in `main`; libraries
  /// and tests never call it.
  public func bootstrap() {
    let level = logLevel
    let format = logFormat
    LoggingSystem.bootstrap { label in
      var handler: any LogHandler =
        switch format {
        case .text: StreamLogHandler.standardError(label: label)
        case .json: JSONLogHandler(label: label, sink: .standardError)
        }
      handler.logLevel = level
      return handler
    }
  }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// Writes each log event as one JSON object on one line:
/// `{"ts":"…","level":"info","logger":"gateway","msg":"…","source":"…","gateway.client_id":"…"}`.
///
/// Metadata keys become top-level fields; a key that collides with a reserved field is
/// prefixed with `meta.` so that nothing is overwritten.
public struct JSONLogHandler: LogHandler {
  /// Where lines go. A sink writes each line with one `write(2)`, so lines from different
  /// threads never interleave.
  public struct Sink: Sendable {
    let write: @Sendable (String) -> Void

    /// Standard error, unbuffered.
    public static let standardError = Sink { line in
      var line = line
      line.withUTF8 { bytes in
        var offset = 0
        while offset < bytes.count {
          let written = Foundation.write(2, bytes.baseAddress! + offset, bytes.count - offset)
          if written <= 0 { break }
          offset += written
        }
      }
    }

    /// A custom sink, e.g. an in-memory capture in tests.
    public init(write: @escaping @Sendable (String) -> Void) {
      self.write = write
    }
  }

  public var metadata: Logger.Metadata = [:]
  public var logLevel: Logger.Level = .info
  public var metadataProvider: Logger.MetadataProvider?
  private let label: String
  private let sink: Sink

  public init(label: String, sink: Sink) {
    self.label = label
    self.sink = sink
  }

  public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  private static let reserved: Set<String> = ["ts", "level", "logger", "msg", "source"]

  public func log(event: LogEvent) {
    var merged = self.metadata
    if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
    if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
    if let error = event.error { merged["error"] = "\(error)" }
    let level = event.level
    let message = event.message
    let source = event.source

    var fields: [(String, String)] = [
      ("ts", Self.timestamp()), ("level", level.rawValue), ("logger", label),
      ("msg", message.description), ("source", source),
    ]
    for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
      fields.append((Self.reserved.contains(key) ? "meta.\(key)" : key, value.description))
    }
    var line = "{"
    for (index, (key, value)) in fields.enumerated() {
      if index > 0 { line += "," }
      line += "\"\(JSONEscaping.escape(key))\":\"\(JSONEscaping.escape(value))\""
    }
    line += "}\n"
    sink.write(line)
  }

  private static func timestamp() -> String {
    Date().formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true))
  }
}

/// Minimal JSON string escaping (RFC 8259 section 7).
enum JSONEscaping {
  static func escape(_ string: String) -> String {
    var out = ""
    out.reserveCapacity(string.utf8.count)
    for scalar in string.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case let c where c.value < 0x20:
        out += "\\u" + String(repeating: "0", count: 4 - String(c.value, radix: 16).count)
          + String(c.value, radix: 16)
      default: out.unicodeScalars.append(scalar)
      }
    }
    return out
  }
}
