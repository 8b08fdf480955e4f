import ArgumentParser

/// `jobctl certs …`: the private CA and its certificates.
struct CertsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "certs",
    abstract: "Create the CA, server and client certificates (ECDSA P-256, SHA-256).",
    subcommands: [CertsInitCommand.self, CertsIssueCommand.self])
}
