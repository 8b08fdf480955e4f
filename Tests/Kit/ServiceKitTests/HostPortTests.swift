import GRPCNIOTransportHTTP2
import ServiceKit
import Testing

@Suite struct HostPortTests {
  @Test(arguments: [
    ("0.0.0.0:50051", "0.0.0.0", 50051), ("localhost:0", "localhost", 0),
    ("[::1]:9101", "::1", 9101), ("status-1.internal:65535", "status-1.internal", 65535),
  ])
  func parsesValid(text: String, host: String, port: Int) {
    let parsed = HostPort(text)
    #expect(parsed == HostPort(host: host, port: port))
    #expect(parsed?.description == text)
  }

  @Test(arguments: ["", "host", ":80", "host:", "host:65536", "host:-1", "::1:80", "[::1]80", "h:x"])
  func rejectsInvalid(text: String) {
    #expect(HostPort(text) == nil)
  }

  @Test func parsesLists() {
    #expect(HostPort.list("a:1, b:2")?.map(\.description) == ["a:1", "b:2"])
    #expect(HostPort.list("a:1,bad") == nil)
    #expect(HostPort.list("") == nil)
    #expect(HostPort.list(" \ta:1\t , b:2 ")?.map(\.description) == ["a:1", "b:2"])
    #expect(HostPort.list("a:1, ") == nil)
  }

  @Test func convertsBoundAddresses() {
    #expect(
      HostPort(SocketAddress.ipv4(host: "127.0.0.1", port: 8080)) == HostPort("127.0.0.1:8080"))
    #expect(HostPort(SocketAddress.ipv6(host: "::1", port: 0)) == HostPort("[::1]:0"))
    #expect(HostPort(SocketAddress.unixDomainSocket(path: "/tmp/socket")) == nil)
  }
}
