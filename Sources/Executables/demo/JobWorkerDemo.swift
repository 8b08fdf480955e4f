import Foundation
import GRPCCore
import JobCtl
import JobWorkerCore
import JobWorkerProtos
import JobWorkerServer
import Logging
import ServiceKit
import ServiceLifecycle
import TLSKit

/// The job worker part of the demo: certificates in a temporary directory, the mTLS server
/// in-process on loopback, a job with live output, a denied cross-user access, clean-up.
struct JobWorkerDemo: Service {
  let logger: Logger

  func run() async throws {
    print("\n== Job worker: gRPC over mutual TLS 1.3 ==")
    let directory = NSTemporaryDirectory() + "jobworker-demo-\(UUID().uuidString.prefix(8))"
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let layout = CertificateLayout(directory: directory)
    try FileManager.default.createDirectory(
      atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])

    // What `jobctl certs init` does: a CA, a server certificate, one admin and two users.
    let ca = try CertificateAuthority.create()
    try ca.issued.write(certificateTo: layout.caCertificate, keyTo: layout.caKey)
    try ca.issueServer(hosts: ["localhost", "127.0.0.1"]).write(
      certificateTo: layout.serverCertificate, keyTo: layout.serverKey)
    for (name, role) in [("admin", Role.admin), ("alice", .user), ("bob", .user)] {
      try ca.issueClient(name: name, role: role).write(
        certificateTo: layout.certificate(for: name), keyTo: layout.key(for: name))
    }
    print("certificates (P-256, SHA-256) in \(directory): CA, server, admin, alice, bob")

    guard geteuid() == 0 else {
      print(
        """
        skipped: running jobs needs root (cgroups, namespaces). As root this part starts the
        server, runs a job as alice with live output, shows bob denied access to it, and
        shows the admin listing every job. Try: sudo swift run demo
        """)
      return
    }
    // Built as the `jobworker` executable builds it, on loopback with a short stop grace.
    let configuration = JobWorkerServer.Configuration(
      listen: HostPort(host: "127.0.0.1", port: 0),
      tls: ServerTLSConfiguration(
        certificatePath: layout.serverCertificate, keyPath: layout.serverKey,
        trustRootsPath: layout.caCertificate),
      manager: JobManager.Configuration(
        dataDirectory: directory + "/data", stopGracePeriod: .seconds(1),
        cgroupName: "jobworker-demo"))
    let worker: JobWorkerServer
    do {
      worker = try await JobWorkerServer.build(configuration: configuration, logger: logger)
    } catch let error as JobError {
      print("skipped: the job manager cannot run on this host: \(error)")
      return
    }
    let group = ServiceGroup(
      configuration: .init(
        services: worker.services.map { .init(service: $0) }, gracefulShutdownSignals: [],
        logger: logger))

    do {
      try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        do {
          try await cancelWhenGracefulShutdown {
            guard let address = await worker.server.listeningAddress else { return }
            print("server listening on \(address) (TLS 1.3 only, client certificate required)")
            try await narrate(address: address, layout: layout)
          }
        } catch {
          print("job worker demo failed: \(error)")
        }
        // As on SIGTERM: health NOT_SERVING, every job stopped, then the server drains.
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
      }
    } catch {
      // The server failed, so the drain that stops the jobs may never have run.
      await worker.manager.shutdown()
      throw error
    }
    print("server stopped, jobs stopped, certificates removed")
  }

  private func narrate(address: HostPort, layout: CertificateLayout) async throws {
    func connection(_ name: String) -> JobWorkerConnection {
      JobWorkerConnection(
        server: address,
        files: ClientTLSFiles(
          caPath: layout.caCertificate, certificatePath: layout.certificate(for: name),
          keyPath: layout.key(for: name)))
    }
    let alice = connection("alice")
    let script = "for i in 1 2 3 4 5; do echo \"tick $i from $(hostname)\"; sleep 0.3; done"
    print("\n$ jobctl run --user alice --memory 64M -- sh -c '\(script)'")
    let job = try await alice.withClient { client in
      try await client.startJob(
        .with {
          $0.command = "sh"
          $0.args = ["-c", script]
          $0.limits.memoryBytes = 64 << 20
        }, options: alice.callOptions
      ).job
    }
    let final = try await alice.withClient { client in
      try await client.streamOutput(.with { $0.jobID = job.jobID }, options: alice.followOptions) {
        response in
        var final: Jobworker_V1_JobStatus?
        for try await message in response.messages {
          switch message.event {
          case .output(let data):
            // Raw bytes; decoded here only to indent them for the narration.
            for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
              print("  | \(line)")
            }
          case .finalStatus(let status): final = status
          case .none: break
          }
        }
        return final
      }
    }
    print("job \(job.jobID) ended: exit code \(final?.exitCode ?? -1)")

    let bob = connection("bob")
    print("\n$ jobctl status --user bob \(job.jobID)")
    do {
      _ = try await bob.withClient { client in
        try await client.getJobStatus(.with { $0.jobID = job.jobID }, options: bob.callOptions)
      }
      print("unexpected: bob could see alice's job")
    } catch let error as JobCtlError {
      let code = error.code == .notFound ? "NOT_FOUND" : String(describing: error.code)
      print("denied: \(error.message) (gRPC \(code))")
      print("  (bob gets exactly the answer a missing job gets: ids of others cannot be probed)")
    }

    let admin = connection("admin")
    print("\n$ jobctl list --user admin")
    let jobs = try await admin.withClient { client in
      try await client.listJobs(.init(), options: admin.callOptions).jobs
    }
    for job in jobs { print("  \(job.jobID)  owner \(job.owner)  \(job.command)") }
  }
}
