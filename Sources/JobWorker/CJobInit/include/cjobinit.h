// CJobInit: what the worker and the job's init share, and the worker's half of a launch.
//
// The worker (`cjobinit_spawn`) clones a child into new PID, mount, network, UTS and IPC
// namespaces with CLONE_VM | CLONE_VFORK (as glibc's posix_spawn does): the child runs on a
// small stack of its own in the worker's address space, nothing of the worker's memory is
// copied, and the calling thread waits until the child has exec'd. The child joins the job's
// cgroup itself where it can (cgroup v1, see cjobinit_spawn_in_cgroup), moves its descriptors
// to fixed numbers, closes every other one and execs the `jobinit` executable
// (Sources/JobWorker/jobinit) with the argument vector `jobinit` and an empty environment.
// That program is PID 1 of the job: it first waits until the worker released it (on the
// release pipe, CJOBINIT_FD_RELEASE; on cgroup v2 without clone3 the worker moves it into the
// job's cgroup before that), then reads the job (cjobinit_job, encoded by the worker into a
// sealed memfd on CJOBINIT_FD_SPEC), prepares the namespaces, forks the user's program
// (which drops privileges and execve()s) and then forwards signals to it, reaps every orphan
// and exits with the program's status. So the job and `ps` on the host see `jobinit`, not the
// worker's command line, and each job's init costs the few pages of a small static executable
// instead of a copy-on-write copy of the worker.
//
// Every step on either side that fails reports FAILED {stage, errno} on the status pipe
// (cjobinit_report, written only by cjobinit_report_send) before the process exits, so the
// worker always learns which step failed and why.
//
// The child's code before the exec runs only async-signal-safe code and raw system calls,
// because the worker is multithreaded: the child is a copy of one thread whose siblings may
// have held locks (malloc, glibc's thread list) at the moment of the clone. It also shares the
// worker's memory until the exec: it writes nothing but its own stack and the suspended
// calling thread's errno, and never blocks on the worker (which is why the release is waited
// for after the exec, in jobinit).
#pragma once

#include <stddef.h>
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
  /// STARTED: the index in cjobinit_job.candidates of the program that runs; FAILED at
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
  CJOBINIT_STAGE_RELEASE = 1,  // the worker never released the init (it gave up: ECANCELED)
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
  CJOBINIT_STAGE_EXEC_INIT = 15,  // the child's execve of the jobinit executable
  CJOBINIT_STAGE_SPEC = 16,       // jobinit reading the job from CJOBINIT_FD_SPEC
  CJOBINIT_STAGE_CGROUP = 17,     // the child joining the job's cgroup (v1 `tasks` files)
};

/// Descriptors jobinit starts with: 0 is /dev/null, 1 and 2 the job's output pipe, and these.
/// No other descriptor of the worker reaches it.
enum {
  /// Write end of the status pipe that carries cjobinit_report messages.
  CJOBINIT_FD_STATUS = 3,
  /// The encoded cjobinit_job: a sealed memfd, read from offset 0.
  CJOBINIT_FD_SPEC = 4,
  /// Read end of the release pipe: jobinit waits for one byte on it before anything else.
  CJOBINIT_FD_RELEASE = 5,
};

/// Everything the init needs to know about a job. The worker passes it to jobinit through a
/// memfd, never through the argument vector or the environment, which every user on the host
/// can read in /proc/PID/cmdline (and `ps`).
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
  /// "size=67108864,mode=1777".
  const char *scratch_options;
  /// Credentials of the program and of the init once it no longer needs root.
  uid_t uid;
  gid_t gid;
} cjobinit_job;

/// The worker's descriptors for one launch. cjobinit_spawn does not close them.
typedef struct {
  /// The jobinit executable, from cjobinit_open_executable.
  int init_executable;
  /// Write end of the output pipe: the program's stdout and stderr.
  int output;
  /// Read end of the release pipe: the init (after the exec) waits for one byte on it before
  /// anything else, so that the worker can put it into the job's cgroup (unless it was cloned
  /// into it or joined it itself) and watch its descriptors first. EOF aborts.
  int release;
  /// Write end of the status pipe that carries cjobinit_report messages.
  int status;
} cjobinit_descriptors;

/// Largest encoded job the init accepts (the worker's own limits are far below it).
#define CJOBINIT_JOB_MAX_BYTES (64u << 20)

/// Opens the jobinit executable for later launches: O_PATH and close-on-exec, so every job
/// runs the very file checked here, whatever later happens to the path (an upgrade cannot
/// pair this worker with another version's init). Returns the descriptor, or -errno:
/// -EACCES for a file that is not regular or has no execute bit (as execve would).
int cjobinit_open_executable(const char *path);

/// Encodes `job` into a new sealed memfd (close-on-exec) positioned at offset 0. Returns the
/// descriptor or -errno (-EINVAL for a job without candidates or over CJOBINIT_JOB_MAX_BYTES).
int cjobinit_job_encode(const cjobinit_job *job);

/// The number of pointers cjobinit_job_decode needs for the encoded job in `buffer`, or 0 if
/// it is not a job encoded by this version of cjobinit_job_encode.
size_t cjobinit_job_vector_slots(const char *buffer, size_t size);

/// Decodes an encoded job in place: *job then points into `buffer` (which must stay mapped
/// and is not modified) and into `vectors`, an array of cjobinit_job_vector_slots() pointers.
/// Returns 0, or -EINVAL for anything cjobinit_job_encode did not write.
int cjobinit_job_decode(const char *buffer, size_t size, char **vectors, size_t slots,
                        cjobinit_job *job);

/// Writes one report (async-signal-safe; a failed write is ignored: the worker then sees the
/// init exit without a report).
void cjobinit_report_send(int fd, int32_t kind, int32_t stage, int32_t value, int32_t candidate);

/// Reports FAILED {stage, error, candidate} on `fd` and exits with status 127.
_Noreturn void cjobinit_fail(int fd, int32_t stage, int32_t error, int32_t candidate);

/// Clones the child that becomes the job's init (see above) and returns once it has exec'd
/// jobinit (or failed and exited). Returns its PID (in the worker's namespace) and stores a
/// pidfd for it in *pidfd, or returns -errno. The caller closes its copies of the output,
/// release and status descriptors afterwards, and must reap the child (waitpid) in every case.
pid_t cjobinit_spawn(const cjobinit_job *job, const cjobinit_descriptors *descriptors,
                     int *pidfd);

/// cjobinit_spawn, and the child first joins the job's cgroup itself: it writes "0" to each of
/// the `cgroup_task_count` descriptors in `cgroup_tasks`, the job's cgroup v1 `tasks` files
/// opened for writing by the caller (close-on-exec; the caller closes them afterwards). A
/// thread that moves itself spares the RCU grace period (several milliseconds) that the
/// kernel waits for when a parent moves a whole process through cgroup.procs. A failed write
/// is reported as FAILED {CJOBINIT_STAGE_CGROUP, errno}.
pid_t cjobinit_spawn_in_cgroup(const cjobinit_job *job, const cjobinit_descriptors *descriptors,
                               const int *cgroup_tasks, size_t cgroup_task_count, int *pidfd);

/// cjobinit_spawn, with the child created inside the cgroup v2 directory `cgroup_fd` (an
/// O_RDONLY|O_DIRECTORY descriptor) by clone3(CLONE_INTO_CGROUP): it never runs outside the
/// job's cgroup, and nobody writes cgroup.procs (a parent moving a process there waits for
/// an RCU grace period). -ENOSYS or -E2BIG: the kernel has no clone3 or no CLONE_INTO_CGROUP
/// (before Linux 5.7); the caller then spawns without it and moves the child, which by then
/// runs jobinit, waiting for its release (the few pages the exec touched stay charged to the
/// worker's cgroup).
pid_t cjobinit_spawn_into_cgroup(const cjobinit_job *job, const cjobinit_descriptors *descriptors,
                                 int cgroup_fd, int *pidfd);

/// Reserves the few low descriptor numbers that let a launch's child share the worker's
/// descriptor table and copy only those (see "Launch slots" in spawn.c). The first launch
/// does it otherwise; call it early, while the process has few descriptors open, so that
/// the numbers are low. Without them (no descriptor left) every launch copies the table.
void cjobinit_reserve_launch_slots(void);

/// The placeholder's and the launch slots' numbers, for tests: stores them in `numbers` and
/// returns how many (0 when none are reserved or `capacity` is too small for all).
size_t cjobinit_launch_slots(int *numbers, size_t capacity);

/// pipe2(fds, O_CLOEXEC): Swift's Glibc module does not export pipe2. Returns 0 or -errno.
int cjobinit_pipe(int fds[2]);

/// The release channel: a connected pair of stream sockets (close-on-exec), fds[0] for the
/// init, fds[1] for the worker. A socket rather than a pipe so that the worker's release
/// write to an init that has already exited (it failed before reading) is EPIPE from
/// cjobinit_release, never a SIGPIPE to the worker. Returns 0 or -errno.
int cjobinit_release_channel(int fds[2]);

/// Writes the release byte (MSG_NOSIGNAL). Returns 0, or -errno: -EPIPE or -ECONNRESET when
/// the init has already exited.
int cjobinit_release(int fd);

/// Sends a signal through a pidfd (immune to PID reuse). Returns 0 or -errno.
int cjobinit_pidfd_signal(int pidfd, int signal);

/// A pidfd (close-on-exec) for a process of this PID namespace. Returns it or -errno.
int cjobinit_pidfd_open(pid_t pid);

#ifdef __cplusplus
}
#endif
