import ArgumentParser
import Foundation
import JobWorkerCore
import JobWorkerServer
import Logging
import Metrics
import Prometheus
import ServiceKit
import ServiceLifecycle
import TLSKit

/// `jobworker`: runs Linux processes for mutually authenticated gRPC clients.
@main
struct JobWorker: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "jobworker",
    abstract: "Job worker gRPC server: mutual TLS 1.3, jobs in cgroups (needs root).",
    discussion: "Create certificates with `jobctl certs init`, then: "
      + "jobworker --ca ~/.config/jobctl/ca.pem --cert ~/.config/jobctl/server.pem "
      + "--key ~/.config/jobctl/server-key.pem")

  @Option(help: "gRPC (mTLS) listen address (env: JOBWORKER_LISTEN).")
  var listen: HostPort = Environment.value(
    "JOBWORKER_LISTEN", default: HostPort(host: "0.0.0.0", port: 50053))

  @Option(help: "Prometheus /metrics listen address (env: JOBWORKER_METRICS_LISTEN).")
  var metricsListen: HostPort = Environment.value(
    "JOBWORKER_METRICS_LISTEN", default: HostPort(host: "0.0.0.0", port: 9103))

  @Option(help: "CA certificate client certificates must chain to (env: JOBWORKER_CA).")
  var ca: String = Environment.string("JOBWORKER_CA", default: defaultLayout.caCertificate)

  @Option(help: "Server certificate (env: JOBWORKER_CERT).")
  var cert: String = Environment.string(
    "JOBWORKER_CERT", default: defaultLayout.serverCertificate)

  @Option(help: "Server private key (env: JOBWORKER_KEY).")
  var key: String = Environment.string("JOBWORKER_KEY", default: defaultLayout.serverKey)

  @Option(help: "Where job output is stored (env: JOBWORKER_DATA_DIR).")
  var dataDir: String = Environment.string("JOBWORKER_DATA_DIR", default: "/var/lib/jobworker")

  @Option(help: "Parent cgroup of the jobs, one per instance (env: JOBWORKER_CGROUP_NAME).")
  var cgroupName: String = Environment.string("JOBWORKER_CGROUP_NAME", default: "jobworker")

  @Option(
    help: ArgumentHelp(
      "The jobinit executable, PID 1 of every job; default: jobinit next to this executable "
        + "(env: JOBWORKER_JOBINIT).", valueName: "path"))
  var jobinit: String = Environment.string("JOBWORKER_JOBINIT", default: "")

  @Option(help: "Size of each job's private /tmp and /dev/shm (env: JOBWORKER_SCRATCH_SIZE).")
  var scratchSize: ByteCount = Environment.value(
    "JOBWORKER_SCRATCH_SIZE", default: ByteCount(bytes: 64 << 20))

  @Option(help: "Output stored per job; the rest is dropped (env: JOBWORKER_MAX_OUTPUT).")
  var maxOutput: ByteCount = Environment.value(
    "JOBWORKER_MAX_OUTPUT", default: ByteCount(bytes: 64 << 20))

  /// `--retention`'s default: parsed here, so that a bad environment value reads as clearly
  /// as a bad flag.
  static let defaultRetention = Environment.value(
    "JOBWORKER_RETENTION", default: TimeSpan(seconds: 24 * 3600),
    parse: { text in try TimeSpan(parsing: text) })

  @Option(
    parsing: .unconditional,
    help: ArgumentHelp(
      "How long ended jobs and their output are kept: 24h, 30m, 7d… (env: JOBWORKER_RETENTION). "
        + "(default: \(JobWorker.defaultRetention))"),
    transform: { text in try TimeSpan(parsing: text) })
  var retention: TimeSpan = JobWorker.defaultRetention

  @Option(
    help: "Output kept in all; past it the oldest ended jobs go (env: JOBWORKER_MAX_STORED_OUTPUT)."
  )
  var maxStoredOutput: ByteCount = Environment.value(
    "JOBWORKER_MAX_STORED_OUTPUT", default: ByteCount(bytes: 1 << 30))

  @Option(
    parsing: .unconditional,
    help: "Running jobs one user may have at once (env: JOBWORKER_MAX_JOBS_PER_USER).")
  var maxJobsPerUser: Int = Environment.value("JOBWORKER_MAX_JOBS_PER_USER", default: 10)

  @OptionGroup var connections: ConnectionOptions
  @OptionGroup var logging: LoggingOptions
  @OptionGroup var shutdown: ShutdownOptions

  /// Where `jobctl certs init` puts the files by default.
  static var defaultLayout: CertificateLayout {
    CertificateLayout(directory: CertificateLayout.defaultDirectory)
  }

  func validate() throws {
    guard (1...10_000).contains(maxJobsPerUser) else {
      throw ValidationError("--max-jobs-per-user must be between 1 and 10000")
    }
    guard maxOutput.bytes >= 1 else {
      throw ValidationError("--max-output must be at least 1 byte")
    }
    guard scratchSize.bytes >= 4096 else {
      throw ValidationError("--scratch-size must be at least 4K")
    }
    // Shorter would forget a job before its user could ask for its final status.
    guard retention.seconds >= 60 else {
      throw ValidationError("--retention must be at least 1m (got \(retention))")
    }
    guard maxStoredOutput.bytes >= maxOutput.bytes else {
      throw ValidationError(
        "--max-stored-output (\(maxStoredOutput)) must be at least --max-output "
          + "(\(maxOutput)): the output of one job must fit")
    }
  }

  func run() async throws {
    logging.bootstrap()
    let registry = PrometheusCollectorRegistry()
    MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    let logger = Logger(label: "jobworker")

    var configuration = JobWorkerServer.Configuration(
      listen: listen,
      tls: ServerTLSConfiguration(certificatePath: cert, keyPath: key, trustRootsPath: ca),
      manager: JobManager.Configuration(
        dataDirectory: dataDir, maxOutputBytesPerJob: maxOutput.bytes,
        retention: retention.duration, maxStoredOutputBytes: maxStoredOutput.bytes,
        scratchBytesPerJob: scratchSize.bytes, cgroupName: cgroupName,
        initExecutable: jobinit.nilIfEmpty))
    configuration.limits.maxRunningJobsPerUser = maxJobsPerUser
    configuration.connectionLimits = connections.prepare(logger: logger)
    let worker = try await JobWorkerServer.build(configuration: configuration, logger: logger)
    do {
      let metrics = try await MetricsServer.bind(
        to: metricsListen, registry: registry, logger: logger)
      // The gRPC server last: graceful shutdown runs in reverse, so it stops first.
      try await ServerRunner.run(
        services: [metrics] + worker.services, shutdown: shutdown, logger: logger)
    } catch {
      // Start-up or a service failed, so the graceful path that stops jobs may never have run.
      await worker.manager.shutdown()
      throw error
    }
  }
}
