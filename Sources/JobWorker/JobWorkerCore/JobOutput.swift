public import Foundation
import Glibc

/// A job's combined stdout and stderr as chunks of at most ``maxChunkBytes`` (32 KiB unless
/// the caller asks for more), starting at the first byte
/// and ending after the job has ended and every stored byte was delivered. The log file is
/// opened when the sequence is made (`JobManager.output(_:)`) and shared by its iterators,
/// each reading at its own offset with `pread`, so slow readers never slow the job or each
/// other, and a job forgotten meanwhile (its file deleted) still streams to the end; an idle
/// iterator waits for a wake-up from the job's output pump, never polls. Iteration throws
/// `CancellationError` when its task is cancelled, and `JobError` if the log file cannot be
/// read.
public struct JobOutput: AsyncSequence, Sendable {
  /// `Data`, because that is what the gRPC message carries: a chunk is read from the file
  /// into its own storage and handed on without another copy.
  public typealias Element = Data
  /// The chunk size of ``JobManager/output(_:maxChunkBytes:)`` when the caller names none.
  public static let defaultMaxChunkBytes = 32 * 1024

  let job: Job
  let file: LogFile
  /// The largest chunk: a chunk holds what is stored beyond the reader's offset, up to this,
  /// so a reader that keeps up gets small chunks as they are written, and one with a backlog
  /// (a finished job, a slow client) gets full ones.
  public let maxChunkBytes: Int

  /// The streamed job's status, also once the job was forgotten (see `JobManager.sweep`):
  /// what a stream reports at its end.
  public var status: JobStatus { job.status }

  public struct AsyncIterator: AsyncIteratorProtocol {
    let job: Job
    let maxChunkBytes: Int
    var offset: UInt64 = 0
    var file: LogFile?

    public mutating func next() async throws -> Data? {
      while true {
        try Task.checkCancellation()
        guard let file else { return nil }
        let progress = job.outputProgress
        if offset < progress.bytes {
          let count = Int(Swift.min(UInt64(maxChunkBytes), progress.bytes - offset))
          let chunk = try file.read(at: offset, count: count)
          offset += UInt64(chunk.count)
          return chunk
        }
        if progress.ended {
          self.file = nil
          return nil
        }
        try await job.waitForOutput(beyond: offset)
      }
    }
  }

  public func makeAsyncIterator() -> AsyncIterator {
    AsyncIterator(job: job, maxChunkBytes: maxChunkBytes, file: file)
  }
}

/// A read-only descriptor on a job's log, closed when the last sequence and iterator copy
/// holding it is gone. Only `pread`, which keeps no file offset, so sharing it is safe.
final class LogFile: Sendable {
  private let fd: Int32

  init(path: String) throws(JobError) {
    fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw JobError(.internalError, "cannot open \(path): \(errnoText())") }
  }

  deinit { close(fd) }

  /// Reads bytes that the pump has already stored (so a short read means a lost file) into
  /// storage of their own, which the returned `Data` owns: no zero-fill, no copy after `pread`.
  // TODO: These are blocking reads of a local file on the caller's thread; they are short
  // (one chunk, usually from the page cache) but an io_uring or NIO NonBlockingFileIO read
  // would keep the cooperative pool free on a slow disk.
  func read(at offset: UInt64, count: Int) throws(JobError) -> Data {
    guard count > 0 else { return Data() }
    let bytes = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 16)
    var done = 0
    while done < count {
      let n = pread(fd, bytes + done, count - done, off_t(offset) + off_t(done))
      if n < 0 && errno == EINTR { continue }
      guard n > 0 else {
        let reason = n < 0 ? errnoText() : "EOF"
        bytes.deallocate()
        throw JobError(.internalError, "job log ended early: \(reason)")
      }
      done += n
    }
    return Data(
      bytesNoCopy: bytes, count: count, deallocator: .custom { bytes, _ in bytes.deallocate() })
  }
}
