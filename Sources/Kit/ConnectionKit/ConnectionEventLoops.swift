public import NIOCore
import Synchronization

/// Which event loop serves each open connection, so that an RPC handler can run its tasks on
/// the thread that does its connection's I/O.
///
/// Swift tasks otherwise run on the concurrency runtime's own thread pool, and every message a
/// streaming handler reads or writes then crosses threads: the event loop wakes a pool thread
/// to resume the reader, and a write hops back to the event loop. A handler that runs under
/// `withTaskExecutorPreference(executor(localPeer:remotePeer:))` is resumed by a read on the
/// loop that read it (no wake-up of another thread) and its writes need no hop.
///
/// A ``ConnectionGuard`` given a registry records every connection it admits and forgets it
/// when it closes. Keys are the strings gRPC puts in `ServerContext.localPeer`/`remotePeer`.
public final class ConnectionEventLoops: Sendable {
  private struct Key: Hashable {
    var local: String
    var remote: String
  }

  private let connections = Mutex<[Key: EventLoopTaskExecutor]>([:])
  /// One executor per event loop, made on first use: a handler adds no allocation.
  private let executors = Mutex<[ObjectIdentifier: EventLoopTaskExecutor]>([:])

  public init() {}

  /// The executor of the connection between `localPeer` and `remotePeer`, if it is open.
  public func executor(localPeer: String, remotePeer: String) -> EventLoopTaskExecutor? {
    connections.withLock { $0[Key(local: localPeer, remote: remotePeer)] }
  }

  /// Connections recorded and not yet closed.
  public var count: Int { connections.withLock { $0.count } }

  /// Records `channel` (an accepted connection) until it closes.
  func record(_ channel: any Channel) {
    guard let local = channel.localAddress, let remote = channel.remoteAddress else { return }
    let key = Key(local: PeerAddress.format(local), remote: PeerAddress.format(remote))
    let loop = channel.eventLoop
    let executor = executors.withLock { executors in
      if let existing = executors[ObjectIdentifier(loop)] { return existing }
      let made = EventLoopTaskExecutor(loop)
      executors[ObjectIdentifier(loop)] = made
      return made
    }
    connections.withLock { $0[key] = executor }
    channel.closeFuture.whenComplete { [self] _ in
      _ = connections.withLock { $0.removeValue(forKey: key) }
    }
  }
}

/// Runs Swift tasks on one NIO event loop (SE-0417 task executor preference).
public final class EventLoopTaskExecutor: TaskExecutor {
  public let eventLoop: any EventLoop

  public init(_ eventLoop: any EventLoop) {
    self.eventLoop = eventLoop
  }

  public func enqueue(_ job: consuming ExecutorJob) {
    let job = UnownedJob(job)
    eventLoop.execute { [self] in
      job.runSynchronously(on: asUnownedTaskExecutor())
    }
  }
}

/// How gRPC names a peer in `ServerContext.remotePeer`/`localPeer`.
public enum PeerAddress {
  /// The same text grpc-swift-nio-transport puts in `ServerContext.remotePeer`/`localPeer`
  /// (`ipv4:HOST:PORT`, `ipv6:[HOST]:PORT`); a test pins the two together.
  public static func format(_ address: SocketAddress) -> String {
    switch address {
    case .v4(let v4): "ipv4:\(v4.host):\(address.port ?? 0)"
    case .v6(let v6): "ipv6:[\(v6.host)]:\(address.port ?? 0)"
    case .unixDomainSocket: "unix:\(address.pathname ?? "<unknown>")"
    }
  }
}
