import Foundation

/// Milliseconds since the UNIX epoch. Injectable so that tests can move time (the 180 s
/// window) without sleeping.
public typealias MillisClock = @Sendable () -> Int64

/// The wall clock in milliseconds since the UNIX epoch.
public let systemMillisClock: MillisClock = {
  Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
}

/// The contract's window: users seen within the last 3 minutes are online.
public let onlineWindowMillis: Int64 = 180_000
