import Crypto
public import Foundation
import SwiftASN1
public import X509

/// What a client certificate allows. On the job worker, `admin` acts on every job and `user`
/// only on its own; on the status service (mutual TLS), only `gateway` may report presence.
/// A certificate is good for its one role only: a gateway's cannot run jobs, and a user's
/// cannot feed the presence store.
///
/// Carried in the certificate's subject organizational unit (OU), so that the CA alone decides
/// who is what and the server needs no user database.
public enum Role: String, Sendable, CaseIterable, Hashable, CustomStringConvertible {
  case admin
  case user
  /// A gateway reporting presence to status; nothing else.
  case gateway

  public var description: String { rawValue }
}

/// A certificate and its P-256 private key, as issued by ``CertificateAuthority``.
public struct IssuedCertificate: Sendable {
  public var certificate: Certificate
  public var privateKey: Certificate.PrivateKey

  public init(certificate: Certificate, privateKey: Certificate.PrivateKey) {
    self.certificate = certificate
    self.privateKey = privateKey
  }

  public func certificatePEM() throws -> String {
    try certificate.serializeAsPEM().pemString + "\n"
  }

  /// PKCS#8 PEM, which both OpenSSL and NIOSSL read.
  public func privateKeyPEM() throws -> String { try privateKey.serializeAsPEM().pemString + "\n" }

  /// Writes the certificate (0644) and the key (0600, written before anything could read it).
  public func write(certificateTo certificatePath: String, keyTo keyPath: String) throws {
    try PEMFile.write(try privateKeyPEM(), to: keyPath, mode: 0o600)
    try PEMFile.write(try certificatePEM(), to: certificatePath, mode: 0o644)
  }
}

/// Errors of the certificate tooling.
public struct CertificateError: Error, CustomStringConvertible, Sendable {
  public var message: String
  public init(_ message: String) { self.message = message }
  public var description: String { message }
}

/// A small private CA for the job worker: ECDSA P-256 keys, SHA-256 signatures.
///
/// Lifetimes: the CA one year, leaf certificates 90 days, each backdated five minutes so that a
/// peer whose clock is slightly behind still accepts a fresh certificate.
public struct CertificateAuthority: Sendable {
  public static let caLifetime: TimeInterval = 365 * 24 * 3600
  public static let leafLifetime: TimeInterval = 90 * 24 * 3600
  static let clockSkew: TimeInterval = 5 * 60

  public let issued: IssuedCertificate
  public var certificate: Certificate { issued.certificate }

  public init(issued: IssuedCertificate) { self.issued = issued }

  /// Creates a fresh self-signed CA.
  public static func create(
    commonName: String = "jobworker CA", lifetime: TimeInterval = caLifetime, now: Date = Date()
  ) throws -> CertificateAuthority {
    let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
    let name = try DistinguishedName {
      OrganizationName("jobworker")
      CommonName(commonName)
    }
    let publicKey = key.publicKey
    let certificate = try Certificate(
      version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
      notValidBefore: now - clockSkew, notValidAfter: now + lifetime,
      issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
      extensions: try Certificate.Extensions {
        Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
        Critical(KeyUsage(keyCertSign: true, cRLSign: true))
        SubjectKeyIdentifier(hash: publicKey)
      },
      issuerPrivateKey: key)
    return CertificateAuthority(
      issued: IssuedCertificate(certificate: certificate, privateKey: key))
  }

  /// Loads a CA written by ``IssuedCertificate/write(certificateTo:keyTo:)``.
  public static func load(certificatePath: String, keyPath: String) throws -> CertificateAuthority {
    let certificate = try Certificate(pemEncoded: try PEMFile.read(certificatePath))
    let key = try Certificate.PrivateKey(pemEncoded: try PEMFile.read(keyPath))
    guard key.publicKey == certificate.publicKey else {
      throw CertificateError("\(keyPath) is not the private key of \(certificatePath)")
    }
    return CertificateAuthority(
      issued: IssuedCertificate(certificate: certificate, privateKey: key))
  }

  /// A server certificate for `hosts` (DNS names or IP addresses, all put in the SAN).
  public func issueServer(
    hosts: [String], lifetime: TimeInterval = leafLifetime, now: Date = Date()
  ) throws -> IssuedCertificate {
    guard let first = hosts.first else {
      throw CertificateError("a server needs at least one host")
    }
    let names = try hosts.map(Self.generalName)
    return try issue(
      subject: try DistinguishedName { CommonName(first) },
      usage: .serverAuth, alternativeNames: names, lifetime: lifetime, now: now)
  }

  /// A client certificate: subject CN = `name` (the identity), OU = `role`.
  public func issueClient(
    name: String, role: Role, lifetime: TimeInterval = leafLifetime, now: Date = Date()
  ) throws -> IssuedCertificate {
    guard PeerIdentity.isValidName(name) else {
      throw CertificateError(
        "invalid user name '\(name)': use 1-64 characters from a-z A-Z 0-9 . _ @ -")
    }
    return try issue(
      subject: try DistinguishedName {
        OrganizationName("jobworker")
        OrganizationalUnitName(role.rawValue)
        CommonName(name)
      },
      usage: .clientAuth, alternativeNames: nil, lifetime: lifetime, now: now)
  }

  private func issue(
    subject: DistinguishedName, usage: ExtendedKeyUsage.Usage, alternativeNames: [GeneralName]?,
    lifetime: TimeInterval, now: Date
  ) throws -> IssuedCertificate {
    let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
    let publicKey = key.publicKey
    let caPublicKey = issued.certificate.publicKey
    let certificate = try Certificate(
      version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
      notValidBefore: now - Self.clockSkew, notValidAfter: now + lifetime,
      issuer: issued.certificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
      extensions: try Certificate.Extensions {
        Critical(BasicConstraints.notCertificateAuthority)
        Critical(KeyUsage(digitalSignature: true))
        try ExtendedKeyUsage([usage])
        SubjectKeyIdentifier(hash: publicKey)
        AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: caPublicKey).keyIdentifier)
        if let alternativeNames { SubjectAlternativeNames(alternativeNames) }
      },
      issuerPrivateKey: issued.privateKey)
    return IssuedCertificate(certificate: certificate, privateKey: key)
  }

  static func generalName(_ host: String) throws -> GeneralName {
    if let bytes = ipAddressBytes(host) {
      return .ipAddress(ASN1OctetString(contentBytes: bytes[...]))
    }
    guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || "-.*".contains($0) })
    else {
      throw CertificateError("invalid host name '\(host)'")
    }
    return .dnsName(host)
  }
}

/// The binary form of an IPv4 or IPv6 address, as a SAN `iPAddress` needs.
private func ipAddressBytes(_ text: String) -> [UInt8]? {
  var v4 = in_addr()
  if inet_pton(AF_INET, text, &v4) == 1 {
    return withUnsafeBytes(of: &v4) { Array($0) }
  }
  var v6 = in6_addr()
  if inet_pton(AF_INET6, text, &v6) == 1 {
    return withUnsafeBytes(of: &v6) { Array($0) }
  }
  return nil
}

/// Reading and writing PEM files with explicit permissions.
public enum PEMFile {
  public static func read(_ path: String) throws -> String {
    do {
      return try String(contentsOfFile: path, encoding: .utf8)
    } catch {
      throw CertificateError("cannot read \(path): \(Self.reason(error))")
    }
  }

  /// Creates or truncates `path` with `mode`, also fixing the mode of an existing file, and
  /// refuses to follow a symbolic link (a key must never land somewhere unexpected).
  public static func write(_ text: String, to path: String, mode: mode_t) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode)
    guard fd >= 0 else {
      throw CertificateError("cannot write \(path): \(String(cString: strerror(errno)))")
    }
    defer { close(fd) }
    guard fchmod(fd, mode) == 0 else {
      throw CertificateError("cannot chmod \(path): \(String(cString: strerror(errno)))")
    }
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
      let written = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
      if written < 0 && errno == EINTR { continue }
      guard written > 0 else {
        throw CertificateError("cannot write \(path): \(String(cString: strerror(errno)))")
      }
      bytes = bytes.dropFirst(written)
    }
  }

  static func reason(_ error: any Error) -> String {
    let nsError = error as NSError
    if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError,
      underlying.domain == NSPOSIXErrorDomain
    {
      return String(cString: strerror(Int32(underlying.code)))
    }
    return nsError.localizedDescription
  }
}
