import SwiftASN1
public import X509

/// Who a verified client certificate says the caller is: its subject common name (`name`) and
/// organizational unit (`role`).
///
/// Anything ambiguous is refused rather than guessed: no CN, several CNs, a name outside a
/// conservative character set, no OU, several OUs, or an OU that is not a known role.
public struct PeerIdentity: Sendable, Hashable, CustomStringConvertible {
  public var name: String
  public var role: Role

  public init(name: String, role: Role) {
    self.name = name
    self.role = role
  }

  /// Reads the identity from a certificate the TLS layer already verified against our CA.
  public init(certificate: Certificate) throws(PeerIdentityError) {
    let names = Self.values(of: .RDNAttributeType.commonName, in: certificate.subject)
    let units = Self.values(of: .RDNAttributeType.organizationalUnitName, in: certificate.subject)
    guard names.count == 1, let name = names.first, Self.isValidName(name) else {
      throw PeerIdentityError(
        code: .invalidName,
        message: "client certificate subject needs exactly one common name of 1-64 safe characters")
    }
    guard units.count == 1, let unit = units.first, let role = Role(rawValue: unit) else {
      throw PeerIdentityError(
        code: .invalidRole,
        message:
          "client certificate subject needs exactly one organizational unit: admin, user or gateway"
      )
    }
    self.init(name: name, role: role)
  }

  public var description: String { "\(name) (\(role))" }

  /// Names are used in logs, job records and error messages, so keep them boring.
  public static func isValidName(_ name: String) -> Bool {
    (1...64).contains(name.utf8.count)
      && name.utf8.allSatisfy { byte in
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
          UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"),
          UInt8(ascii: "@"), UInt8(ascii: "-"):
          true
        default: false
        }
      }
  }

  private static func values(
    of type: ASN1ObjectIdentifier, in name: DistinguishedName
  ) -> [String] {
    name.flatMap { $0 }.filter { $0.type == type }.map { String($0.value) ?? "" }
  }
}

/// Why a connection has no usable identity.
public struct PeerIdentityError: Error, Sendable, CustomStringConvertible {
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    private let raw: String
    /// No verified certificate is known for the connection.
    public static let noCertificate = Code(raw: "no-certificate")
    public static let invalidName = Code(raw: "invalid-name")
    public static let invalidRole = Code(raw: "invalid-role")
    public var description: String { raw }
  }

  public var code: Code
  public var message: String

  public init(code: Code, message: String) {
    self.code = code
    self.message = message
  }

  public var description: String { message }
}
