public import ArgumentParser
import Foundation

/// Environment variable twins of command-line flags.
///
/// Every server flag has a twin (`--listen` ↔ `GATEWAY_LISTEN`, …). Flags are declared with a
/// default read from the environment, so precedence is: flag, then environment, then the
/// built-in default, and `--help` shows the effective default.
public enum Environment {
  /// The raw value of `name`, or nil when unset or empty. `getenv` looks up one variable;
  /// `ProcessInfo.environment` would copy the whole environment into a dictionary on every
  /// call, and a command line's defaults read a dozen variables, each several times while
  /// ArgumentParser builds its commands (`jobctl` runs in tens of milliseconds).
  public static func raw(_ name: String) -> String? {
    guard let value = getenv(name) else { return nil }
    let string = String(cString: value)
    return string.isEmpty ? nil : string
  }

  /// The value of `name` parsed as `T`, or `fallback` when unset or empty.
  ///
  /// A set but unparsable value is a configuration error: the process prints why and exits
  /// with status 64 (EX_USAGE) rather than silently running on the fallback.
  public static func value<T: ExpressibleByArgument>(_ name: String, default fallback: T) -> T {
    guard let raw = Self.raw(name) else { return fallback }
    guard let parsed = T(argument: raw) else {
      FileHandle.standardError.write(
        Data("error: environment variable \(name)=\(raw) is not a valid value\n".utf8))
      exit(64)
    }
    return parsed
  }

  /// The value of `name` parsed by `parse`, or `fallback` when unset or empty; like
  /// ``value(_:default:)``, but the error says why the value is not valid.
  public static func value<T>(
    _ name: String, default fallback: T, parse: (String) throws -> T
  ) -> T {
    guard let raw = Self.raw(name) else { return fallback }
    do {
      return try parse(raw)
    } catch {
      FileHandle.standardError.write(
        Data("error: environment variable \(name)=\(raw) is not a valid value: \(error)\n".utf8))
      exit(64)
    }
  }

  /// The raw string value of `name`, or `fallback` when unset or empty.
  public static func string(_ name: String, default fallback: String) -> String {
    value(name, default: fallback)
  }
}

extension String {
  /// `nil` for the empty string: optional path flags default to "" (ArgumentParser deprecates
  /// optional options with a default, and the default must come from the environment).
  public var nilIfEmpty: String? { isEmpty ? nil : self }
}
