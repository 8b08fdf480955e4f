import NIOCore
import NIOEmbedded
import Testing

@testable import CounterGateway

/// A connection's flushes during its event loop's batch of pings: held until the batch's end
/// and passed on once, so that the pings of all its streams leave in one write; outside a
/// batch every flush passes at once.
@Suite struct FlushBatchTests {
  static func connection(_ batch: FlushBatch) throws -> (EmbeddedChannel, FlushCounter) {
    let counter = FlushCounter()
    let channel = EmbeddedChannel()
    // Outbound events go tail to head: DeferredFlushHandler first, then the counter.
    try channel.pipeline.syncOperations.addHandlers(counter, DeferredFlushHandler(batch: batch))
    return (channel, counter)
  }

  @Test func flushesDuringABatchLeaveOncePerConnectionAtItsEnd() throws {
    let batch = FlushBatch()
    let (first, firstCount) = try Self.connection(batch)
    let (second, secondCount) = try Self.connection(batch)
    batch.run {
      for _ in 0..<3 {
        first.flush()
        second.flush()
      }
      #expect(firstCount.flushes == 0 && secondCount.flushes == 0)
    }
    #expect(firstCount.flushes == 1 && secondCount.flushes == 1)
    // The next batch holds them again.
    batch.run { first.flush() }
    #expect(firstCount.flushes == 2)
  }

  @Test func flushesOutsideABatchPassAtOnce() throws {
    let batch = FlushBatch()
    let (channel, counter) = try Self.connection(batch)
    channel.flush()
    channel.flush()
    #expect(counter.flushes == 2)
  }
}

/// Counts the flushes that reach it.
final class FlushCounter: ChannelOutboundHandler {
  typealias OutboundIn = Any
  private(set) var flushes = 0

  func flush(context: ChannelHandlerContext) {
    flushes += 1
    context.flush()
  }
}
