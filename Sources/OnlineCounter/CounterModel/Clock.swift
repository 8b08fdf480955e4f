import Foundation

/// Milliseconds since the UNIX epoch. Injectable so that tests can move time (the 180 s
/// window) without sleeping.
public typealias MillisClock = @Sendable () -> Int64

/// The wall clock in milliseconds since the UNIX epoch: when the gateway saw a pong, and what
/// the status service measures the window and the future skew against.
public let systemMillisClock: MillisClock = {
  Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
}

/// The contract's window: users seen within the last 3 minutes are online.
public let onlineWindowMillis: Int64 = 180_000
