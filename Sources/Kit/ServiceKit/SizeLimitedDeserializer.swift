public import GRPCCore

/// A deserializer that refuses a message over `maxBytes` with `RESOURCE_EXHAUSTED`, naming the
/// size and the limit, before decoding it.
///
/// The HTTP/2 transport enforces its own payload limit (`maxRequestPayloadSize`) by resetting
/// the stream: the client sees `RST_STREAM` and learns nothing. With the transport's limit set
/// above an API's own, a message between the two gets this clear error instead, and the RPC
/// ends with it (neighbouring streams are not touched). Above the transport's limit the reset
/// still applies: it bounds what one message can make the server buffer.
public struct SizeLimitedDeserializer<Base: MessageDeserializer>: MessageDeserializer {
  public typealias Message = Base.Message

  public let maxBytes: Int
  private let base: Base

  public init(maxBytes: Int, wrapping base: Base) {
    self.maxBytes = maxBytes
    self.base = base
  }

  public func deserialize<Bytes: GRPCContiguousBytes>(
    _ serializedMessageBytes: Bytes
  ) throws -> Message {
    let size = serializedMessageBytes.count
    guard size <= maxBytes else {
      throw RPCError(
        code: .resourceExhausted,
        message:
          "a \(Message.self) of \(size) bytes is over this server's limit of \(maxBytes) bytes")
    }
    return try base.deserialize(serializedMessageBytes)
  }
}
