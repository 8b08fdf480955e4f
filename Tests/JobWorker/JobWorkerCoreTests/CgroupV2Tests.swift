import Foundation
import Glibc
import TestSupport
import Testing

@testable import JobWorkerCore

/// cgroup v2 cannot be tried for real on a v1 host, so the driver runs against a directory
/// laid out like the kernel's, and the test checks what it writes and how it parses.
@Suite("cgroup v2 driver")
struct CgroupV2Tests {
  @Test func writesLimitsAndParsesUsage() throws {
    let root = FileManager.default.temporaryDirectory
      .appendingPathComponent("cgroup2-\(UUID().uuidString.prefix(8))").path
    defer { try? FileManager.default.removeItem(atPath: root) }
    func file(_ path: String, _ content: String = "") {
      _ = FileManager.default.createFile(atPath: root + "/" + path, contents: Data(content.utf8))
    }
    try FileManager.default.createDirectory(
      atPath: root + "/jw/stale", withIntermediateDirectories: true)
    file("cgroup.controllers", "cpuset cpu io memory pids")
    file("cgroup.subtree_control")
    file("jw/cgroup.subtree_control")

    let driver = try #require(try Cgroups.detect(root: root, parent: "jw") as? CgroupV2)
    // A job cgroup left by a crashed run is removed.
    try driver.createParent()
    #expect(try driver.removeStale() == ["stale"])
    #expect(FileSystem.read(root + "/cgroup.subtree_control") == "+cpu +memory +io +pids")
    #expect(FileSystem.read(root + "/jw/cgroup.subtree_control") == "+cpu +memory +io +pids")
    #expect(!FileSystem.exists(root + "/jw/stale"))

    // The kernel creates these files with the directory; here the test does.
    try FileManager.default.createDirectory(
      atPath: root + "/jw/job", withIntermediateDirectories: true)
    for name in ["cpu.max", "memory.max", "memory.swap.max", "pids.max", "io.max", "cgroup.kill"] {
      file("jw/job/" + name)
    }
    file("jw/job/cpu.stat", "usage_usec 1234\nuser_usec 1000\nnr_periods 10\nnr_throttled 7\n")
    file("jw/job/memory.peak", "4096\n")
    file("jw/job/memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    file(
      "jw/job/io.stat",
      "254:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n"
        + "8:0 rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n")
    file("jw/job/cgroup.procs", "")

    try driver.create(
      "job",
      limits: CgroupLimits(
        cpuMillicores: 250, memoryBytes: 64 << 20, maxPids: 50,
        devices: [.init(major: 254, minor: 0, readBytesPerSecond: 1000, writeIOPS: 10)]))
    #expect(FileSystem.read(root + "/jw/job/cpu.max") == "25000 100000")
    #expect(FileSystem.read(root + "/jw/job/memory.max") == "67108864")
    #expect(FileSystem.read(root + "/jw/job/memory.swap.max") == "0")
    #expect(FileSystem.read(root + "/jw/job/pids.max") == "50")
    #expect(
      FileSystem.read(root + "/jw/job/io.max") == "254:0 rbps=1000 wbps=max riops=max wiops=10")

    #expect(
      driver.usage("job")
        == ResourceUsage(
          cpuMicros: 1234, memoryPeakBytes: 4096, ioReadBytes: 101, ioWriteBytes: 202))
    #expect(driver.oomKills("job") == 1)
    #expect(driver.throttledPeriods("job") == 7)
    driver.killAll("job")
    #expect(FileSystem.read(root + "/jw/job/cgroup.kill") == "1")
    // The init is cloned into this directory (see CloneIntoCgroupTests), not moved.
    #expect(driver.cloneDirectory("job") == root + "/jw/job")
    #expect(driver.joinFiles("job").isEmpty)
  }
}

/// The clone into a cgroup v2 directory, for real: on a host whose v2 hierarchy is mounted
/// (here the hybrid `/sys/fs/cgroup/unified`, without controllers, next to v1), the init is
/// created inside a fresh cgroup of it, so it never runs outside (`clone3(CLONE_INTO_CGROUP)`).
@Suite("clone into a cgroup v2 directory")
struct CloneIntoCgroupTests {
  static let hierarchy =
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"].first {
      FileManager.default.fileExists(atPath: $0 + "/cgroup.procs")
        && FileManager.default.fileExists(atPath: $0 + "/cgroup.controllers")
    }

  @Test(
    .requires(.root), .requires(.product("jobinit")),
    .enabled(if: hierarchy != nil, "no cgroup v2 hierarchy mounted"))
  func initStartsInsideItsCgroup() throws {
    let hierarchy = try #require(Self.hierarchy)
    let name = "jobworker-clone-test-\(UUID().uuidString.prefix(8))"
    let directory = hierarchy + "/" + name
    try #require(mkdir(directory, 0o755) == 0, "mkdir \(directory): \(errnoText())")
    defer { rmdir(directory) }
    let launched = try Launcher.spawn(
      Launcher.Request(
        initExecutable: try InitExecutable(path: builtProduct("jobinit")),
        program: try ProgramSearch(command: "/bin/false", environment: []), arguments: [],
        environment: [], workingDirectory: "/", hostname: "job-test", scratchBytes: 1 << 20,
        uid: 65534, gid: 65534, cgroupDirectory: directory))
    // Before its release the child has done nothing but wait: it was born in the cgroup.
    let membership = FileSystem.read("/proc/\(launched.pid)/cgroup") ?? ""
    let inside = FileSystem.read(directory + "/cgroup.procs")
    guard launched.clonedIntoCgroup else {
      Launcher.abandon(launched)
      Issue.record("not cloned into \(directory)")
      return
    }
    #expect(membership.split(separator: "\n").contains("0::/\(name)"), "\(membership)")
    #expect(inside == "\(launched.pid)\n")
    // Released, the init runs the program as from any other clone: jobinit exits with the
    // program's status, 1 for /bin/false (a failure of the init itself would be 127 or 2).
    try Launcher.release(launched)
    var status: Int32 = 0
    while waitpid(launched.pid, &status, 0) < 0 && errno == EINTR {}
    for fd in [launched.pidfd, launched.output, launched.status] { close(fd) }
    #expect(status & 0x7f == 0 && (status >> 8) & 0xff == 1, "wait status \(status)")
  }
}
