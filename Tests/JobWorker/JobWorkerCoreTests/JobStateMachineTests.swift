import Foundation
import Glibc
import Testing

@testable import JobWorkerCore

/// The job's life without processes: each transition's new state and the action it asks for.
@Suite("Job state machine")
struct JobStateMachineTests {
  /// The action's shape, without the continuations it carries (they are not Equatable).
  private func shape(_ action: JobStateMachine.Action) -> String {
    switch action {
    case .none: "none"
    case .resumeStart(let waiters, .success): "resumeStart(\(waiters.count), success)"
    case .resumeStart(let waiters, .failure(let error)):
      "resumeStart(\(waiters.count), \(error))"
    case .resume(let waiters): "resume(\(waiters.count))"
    case .signalInit(let signal): "signalInit(\(signal))"
    case .killAll: "killAll"
    }
  }

  private let usage = ResourceUsage(cpuMicros: 7, memoryPeakBytes: 4096)

  @Test func startRunExit() {
    var machine = JobStateMachine()
    #expect(machine.initIsAlive && !machine.hasEnded && machine.jobState == .running)
    #expect(shape(machine.started(candidate: 0)) == "resumeStart(0, success)")
    // A second STARTED (or one after the end) changes nothing.
    #expect(shape(machine.started(candidate: 0)) == "none")
    #expect(shape(machine.programExited(status: 3 << 8)) == "none")
    #expect(machine.finalUsage == nil)
    #expect(shape(machine.reaped(initStatus: 3 << 8, usage: usage, oomKills: 0)) == "none")
    // Reaped: the outcome and the usage are final, the init may not be signalled, but the job
    // reads as running until its cgroup is gone.
    #expect(!machine.initIsAlive && !machine.hasEnded && machine.jobState == .running)
    #expect(machine.finalUsage == usage)
    #expect(shape(machine.cleanedUp(at: Date())) == "resume(0)")
    #expect(machine.hasEnded && machine.jobState == .exited(code: 3) && machine.endedAt != nil)
    #expect(shape(machine.cleanedUp(at: Date())) == "none")
  }

  @Test func reportedStartFailureIsKeptForLateCallers() {
    var machine = JobStateMachine()
    let error = JobError(.failedToStart, "execve /x: Permission denied")
    #expect(shape(machine.failedToStart(error)) == "resumeStart(0, \(error))")
    // The init exits with 127 after its report; the report, not the exit code, is the reason.
    _ = machine.reaped(initStatus: 127 << 8, usage: usage, oomKills: 0)
    _ = machine.cleanedUp(at: Date())
    guard case .ended(let outcome, _) = machine.lifecycle, case .failure(let kept) = outcome.start
    else {
      Issue.record("not ended with a failed start: \(machine.lifecycle)")
      return
    }
    #expect(kept.message == error.message)
  }

  @Test func initDyingWithoutReportIsAStartFailure() {
    var machine = JobStateMachine()
    let action = machine.reaped(initStatus: SIGKILL, usage: usage, oomKills: 0)
    #expect(shape(action) == "none")  // no caller waited yet
    guard case .cleaningUp(let outcome) = machine.lifecycle,
      case .failure(let error) = outcome.start
    else {
      Issue.record("not cleaning up after a failed start: \(machine.lifecycle)")
      return
    }
    #expect(error.message == "the job's init exited during setup (signal 9)")
  }

  @Test func stopThenKill() {
    var machine = JobStateMachine()
    _ = machine.started(candidate: 0)
    #expect(shape(machine.requestStop()) == "signalInit(\(SIGTERM))")
    #expect(shape(machine.kill()) == "killAll")
    #expect(shape(machine.kill()) == "none")  // once is enough: the cgroup is frozen and killed
    _ = machine.programExited(status: SIGKILL)
    _ = machine.reaped(initStatus: SIGKILL, usage: usage, oomKills: 0)
    #expect(shape(machine.requestStop()) == "none")
    #expect(shape(machine.kill()) == "none")
    _ = machine.cleanedUp(at: Date())
    #expect(machine.jobState == .stopped(signal: SIGKILL))
  }

  /// `shutdown` stops a job whose start has not returned: the request survives the start.
  @Test func stopRequestedWhileStarting() {
    var machine = JobStateMachine()
    #expect(shape(machine.requestStop()) == "signalInit(\(SIGTERM))")
    _ = machine.started(candidate: 0)
    _ = machine.programExited(status: SIGTERM)
    _ = machine.reaped(initStatus: 128 + SIGTERM << 8, usage: usage, oomKills: 0)
    _ = machine.cleanedUp(at: Date())
    #expect(machine.jobState == .stopped(signal: SIGTERM))
  }

  @Test func outputPastTheCapWakesNobody() {
    var machine = JobStateMachine()
    #expect(shape(machine.outputStored(10, loss: nil)) == "resume(0)")
    #expect(shape(machine.outputStored(0, loss: .capReached(limit: 10))) == "none")
    #expect(machine.outputBytes == 10 && machine.outputLoss == .capReached(limit: 10))
    // The first reason stays.
    _ = machine.outputStored(0, loss: .writeFailed(errno: ENOSPC))
    #expect(machine.outputLoss == .capReached(limit: 10))
  }

  @Test func finalStateDecoding() {
    #expect(
      JobStateMachine.finalState(program: 3 << 8, stopRequested: false, killed: false, oomKills: 0)
        == .exited(code: 3))
    #expect(
      JobStateMachine.finalState(program: 15, stopRequested: false, killed: false, oomKills: 0)
        == .signaled(signal: 15))
    #expect(
      JobStateMachine.finalState(program: 9, stopRequested: false, killed: false, oomKills: 1)
        == .oomKilled)
    #expect(
      JobStateMachine.finalState(program: 9, stopRequested: true, killed: true, oomKills: 0)
        == .stopped(signal: SIGKILL))
  }
}
