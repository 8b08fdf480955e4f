public import ArgumentParser
import Foundation
public import Logging

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
          if written < 0 && errno == EINTR { continue }  // a signal is no reason to drop a line
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
  private static let timestampStyle: Date.ISO8601FormatStyle =
    .iso8601.year().month().day().time(includingFractionalSeconds: true)

  public func log(event: LogEvent) {
    var merged = self.metadata
    if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
    if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
    if let error = event.error { merged["error"] = "\(error)" }

    // Built in place: this runs for every line logged.
    var line = "{"
    line.reserveCapacity(256)
    Self.append("ts", Date().formatted(Self.timestampStyle), to: &line)
    Self.append("level", event.level.rawValue, to: &line)
    Self.append("logger", label, to: &line)
    Self.append("msg", event.message.description, to: &line)
    Self.append("source", event.source, to: &line)
    for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
      Self.append(Self.reserved.contains(key) ? "meta.\(key)" : key, value.description, to: &line)
    }
    line += "}\n"
    sink.write(line)
  }

  /// Appends `"key":"value"` to the object being built in `line`.
  private static func append(_ key: String, _ value: String, to line: inout String) {
    if line.utf8.count > 1 { line += "," }  // not the first field after "{"
    line += "\""
    JSONEscaping.append(key, to: &line)
    line += "\":\""
    JSONEscaping.append(value, to: &line)
    line += "\""
  }
}

/// Minimal JSON string escaping (RFC 8259 section 7).
enum JSONEscaping {
  static func escape(_ string: String) -> String {
    var out = ""
    append(string, to: &out)
    return out
  }

  /// Appends `string` to `out`, escaped for use inside a JSON string.
  static func append(_ string: String, to out: inout String) {
    // The common case, nothing to escape, is one copy. Bytes of multi-byte UTF-8 sequences
    // are all >= 0x80, so they never match.
    let needsEscaping = string.utf8.contains { byte in
      byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\")
    }
    guard needsEscaping else {
      out += string
      return
    }
    for scalar in string.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case let c where c.value < 0x20:
        let hex = String(c.value, radix: 16)
        out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
      default: out.unicodeScalars.append(scalar)
      }
    }
  }
}
