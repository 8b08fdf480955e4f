public import NIOHPACK

/// The HTTP/2 header blocks that end a gRPC call with a status, for handlers that speak gRPC on
/// an HTTP/2 stream themselves (``RequestMessageGuard``, the gateway's `Connect` handler).
public enum GRPCStatusTrailers {
  /// Trailers carrying `status` and `message`; a trailers-only response (with `:status` and
  /// `content-type`) when the response has not started.
  public static func trailers(status: Int, message: String?, responseStarted: Bool) -> HPACKHeaders {
    var headers = HPACKHeaders()
    if !responseStarted {
      headers.add(name: ":status", value: "200")
      headers.add(name: "content-type", value: "application/grpc")
    }
    headers.add(name: "grpc-status", value: "\(status)")
    if let message, !message.isEmpty {
      headers.add(name: "grpc-message", value: percentEncoded(message))
    }
    return headers
  }

  /// `grpc-message` is percent-encoded: every byte outside printable ASCII, and `%`.
  public static func percentEncoded(_ message: String) -> String {
    var encoded = ""
    for byte in message.utf8 {
      if (0x20...0x7E).contains(byte) && byte != UInt8(ascii: "%") {
        encoded.unicodeScalars.append(Unicode.Scalar(byte))
      } else {
        let hex = String(byte, radix: 16, uppercase: true)
        encoded += "%" + (hex.count < 2 ? "0" + hex : hex)
      }
    }
    return encoded
  }
}
