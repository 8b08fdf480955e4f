import NIOCore
import Synchronization

/// One value per event loop, made on the loop the first time it is asked for there, and used
/// on that loop only (the gateway's ``FlushBatch`` and ``KeepaliveSweep`` of each loop).
/// Each value keeps its loop alive as long as this does.
final class PerEventLoop<Value>: Sendable {
  private let values = Mutex<[ObjectIdentifier: NIOLoopBound<Value>]>([:])
  private let make: @Sendable (any EventLoop) -> Value

  init(_ make: @escaping @Sendable (any EventLoop) -> Value) {
    self.make = make
  }

  /// `loop`'s value. On `loop`.
  func value(on loop: any EventLoop) -> Value {
    let key = ObjectIdentifier(loop)
    if let bound = values.withLock({ $0[key] }) { return bound.value }
    let bound = NIOLoopBound(make(loop), eventLoop: loop)
    // Only `loop` adds its own entry, so none was added meanwhile.
    values.withLock { $0[key] = bound }
    return bound.value
  }
}
