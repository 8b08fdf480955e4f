// CJobInit: the C half of launching a job. One function, cjobinit_spawn, clones a child into
// new PID, mount, network, UTS and IPC namespaces. That child becomes PID 1 of the job (its
// init): it waits until the worker has put it into the job's cgroup, prepares the namespaces,
// forks the user's program (which drops privileges and execve()s) and then forwards signals
// to the program, reaps every orphan and exits with the program's status. Each of those steps
// is one function in cjobinit.c; a step that fails reports FAILED {stage, errno} on the status
// pipe before the init exits, so the worker always learns which step failed and why.
//
// Everything after clone() runs only async-signal-safe code and raw system calls, because the
// worker is multithreaded: the child is a copy of one thread whose siblings may have held
// locks (malloc, glibc's thread list) at the moment of the clone.
#pragma once

#include <stdint.h>
#include <sys/types.h>
// Not part of Swift's Glibc module; the worker's reactor thread uses them.
#include <sys/epoll.h>
#include <sys/eventfd.h>

#ifdef __cplusplus
extern "C" {
#endif

/// The job init reports to the worker on the status pipe in messages of this fixed size
/// (16 bytes: one write, atomic on a pipe).
typedef struct {
  /// One of CJOBINIT_REPORT_*.
  int32_t kind;
  /// For FAILED: the CJOBINIT_STAGE_* that failed.
  int32_t stage;
  /// STARTED: the program's PID inside the namespace; FAILED: errno; EXITED: the program's
  /// raw wait status (as from waitpid).
  int32_t value;
  /// STARTED: the index in cjobinit_spec.candidates of the program that runs; FAILED at
  /// CJOBINIT_STAGE_EXEC: the index of the candidate whose error `value` is. Otherwise 0.
  int32_t candidate;
} cjobinit_report;

enum {
  CJOBINIT_REPORT_STARTED = 1,
  CJOBINIT_REPORT_FAILED = 2,
  CJOBINIT_REPORT_EXITED = 3,
};

/// The setup step that failed, for clear error messages.
enum {
  CJOBINIT_STAGE_RELEASE = 1,  // the worker never released the child (it gave up: ECANCELED)
  CJOBINIT_STAGE_MOUNT_PRIVATE = 2,
  CJOBINIT_STAGE_MOUNT_PROC = 3,
  CJOBINIT_STAGE_MOUNT_SYS = 4,
  CJOBINIT_STAGE_LOOPBACK = 5,
  CJOBINIT_STAGE_HOSTNAME = 6,
  CJOBINIT_STAGE_FORK = 7,
  CJOBINIT_STAGE_CREDENTIALS = 8,
  CJOBINIT_STAGE_CHDIR = 9,
  CJOBINIT_STAGE_NO_NEW_PRIVS = 10,
  CJOBINIT_STAGE_EXEC = 11,
  CJOBINIT_STAGE_STDIO = 12,  // moving the pipes and /dev/null to their fixed numbers
  CJOBINIT_STAGE_MOUNT_TMP = 13,
  CJOBINIT_STAGE_MOUNT_SHM = 14,
};

typedef struct {
  /// NULL-terminated list of absolute paths to try, in order, after the program has taken
  /// the job's credentials (execvp's search, done as the job's user so that the worker never
  /// tells a job what its user may not see): one path for an absolute command, one per
  /// absolute `PATH` entry for a bare name. At least one.
  char *const *candidates;
  /// NULL-terminated argument and environment vectors.
  char *const *argv;
  char *const *envp;
  /// Absolute directory the program starts in; entered after dropping privileges.
  const char *working_directory;
  /// Host name inside the job's UTS namespace.
  const char *hostname;
  /// mount(2) data for the job's private tmpfs on /tmp and on /dev/shm, e.g.
  /// "size=67108864,mode=1777" (built by the caller: no formatting after clone()).
  const char *scratch_options;
  /// Credentials of the program and of the init once it no longer needs root.
  uid_t uid;
  gid_t gid;
  /// Write end of the output pipe: the program's stdout and stderr.
  int output_fd;
  /// Read end of the release pipe: the child waits for one byte on it before it does
  /// anything, so that the worker can put it into the job's cgroup first. EOF aborts.
  int release_fd;
  /// Write end of the status pipe that carries cjobinit_report messages.
  int status_fd;
} cjobinit_spec;

/// Clones the job init. Returns its PID (in the worker's namespace) and stores a pidfd for it
/// in *pidfd, or returns -errno. The caller closes its copies of output_fd, release_fd and
/// status_fd afterwards, and must reap the child (waitpid) in every case.
pid_t cjobinit_spawn(const cjobinit_spec *spec, int *pidfd);

/// pipe2(fds, O_CLOEXEC): Swift's Glibc module does not export pipe2. Returns 0 or -errno.
int cjobinit_pipe(int fds[2]);

/// Sends a signal through a pidfd (immune to PID reuse). Returns 0 or -errno.
int cjobinit_pidfd_signal(int pidfd, int signal);

#ifdef __cplusplus
}
#endif
