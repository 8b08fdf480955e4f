// jobinit: PID 1 of every job. The worker's cloned child execs it (see
// ../CJobInit/include/cjobinit.h) with the argument vector `jobinit`, an empty environment
// and these descriptors: 0 /dev/null, 1 and 2 the job's output pipe, CJOBINIT_FD_STATUS the
// status pipe, CJOBINIT_FD_SPEC the encoded job, CJOBINIT_FD_RELEASE the release pipe. It
// waits for its release first, then runs one function per step, in order
// (as runc's nsexec.c does); a step that fails reports FAILED {stage, errno} on the status
// pipe through cjobinit_fail and exits, so the worker always learns which step failed and why.
//
// A small static executable of its own, rather than the worker's cloned copy, so that the job
// (in /proc/1/cmdline) and every user on the host (in `ps`) see `jobinit`, not the worker's
// command line, and each job's init costs a few private pages instead of a copy-on-write copy
// of the worker. It is single-threaded, so after the exec any libc function is safe here.
#define _GNU_SOURCE
#include "cjobinit.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

// Signals the init forwards to the program; SIGKILL and SIGSTOP cannot be caught and are
// delivered by the kernel to the whole namespace when they hit the init.
static const int forwarded_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2,
                                        SIGCONT, SIGWINCH};

// The decoded job and the memory it lives in, released once the program runs.
typedef struct {
  cjobinit_job job;
  void *encoded;
  size_t encoded_size;
  void *vectors;
  size_t vectors_size;
} spec_mapping;

static _Noreturn void fail(int stage, int error) {
  cjobinit_fail(CJOBINIT_FD_STATUS, stage, error, 0);
}

// Credentials through raw system calls, for the program's process and for the init itself
// (the init is single-threaded: glibc's wrappers would only add their broadcast to threads).
static int drop_privileges(uid_t uid, gid_t gid) {
  gid_t groups[1] = {gid};
  if (syscall(SYS_setgroups, 1, groups) != 0) return -1;
  if (syscall(SYS_setresgid, gid, gid, gid) != 0) return -1;
  if (syscall(SYS_setresuid, uid, uid, uid) != 0) return -1;
  return 0;
}

// Step 1. Makes sure the worker started us: run by hand, without the status pipe and the spec,
// there is nobody to report to, so say so on stderr. Names the process (an execveat through a
// descriptor would leave the descriptor's number as its name in `ps`) and keeps the status
// pipe from the program.
static void check_started_by_worker(int argc) {
  if (argc != 1 || fcntl(CJOBINIT_FD_STATUS, F_SETFD, FD_CLOEXEC) != 0 ||
      fcntl(CJOBINIT_FD_SPEC, F_GETFD) < 0 || fcntl(CJOBINIT_FD_RELEASE, F_GETFD) < 0) {
    static const char usage[] =
        "jobinit: the init of a job worker's jobs; the job worker starts it, with descriptors "
        "prepared for it. It takes no arguments.\n";
    ssize_t n = write(2, usage, sizeof usage - 1);
    (void)n;
    _exit(2);
  }
  prctl(PR_SET_NAME, "jobinit", 0, 0, 0);
}

// Step 2. Waits until the worker released us: by then the init is in the job's cgroup (on
// cgroup v1 the child joined it before the exec, on v2 it was cloned into it; only on a v2
// kernel without clone3 does the worker move it now), so every page it touches from here on
// and every process it starts are charged to the job, and the worker has recorded the job.
// This is done here, after the exec, and not in the worker's child: that child shares the
// worker's memory and suspends the worker's thread until it execs (CLONE_VM | CLONE_VFORK),
// so it must not wait for anything. EOF means the worker gave up (ECANCELED in the report).
static void wait_for_release(void) {
  char go;
  ssize_t n;
  do {
    n = read(CJOBINIT_FD_RELEASE, &go, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) fail(CJOBINIT_STAGE_RELEASE, n == 0 ? ECANCELED : errno);
  close(CJOBINIT_FD_RELEASE);
}

// Step 3. Signal state inherited from the worker must not leak into the job (an ignored
// SIGPIPE survives execve). Reset every disposition, then block everything (the worker's
// child already did): the init takes its signals synchronously with sigwaitinfo. Cannot fail
// for valid signal numbers.
static void reset_signals(void) {
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < _NSIG; sig++) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL);
  }
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL);
}

// Step 4. Maps the encoded job (read-only: the memfd is sealed) and decodes it in place.
static void read_spec(spec_mapping *spec) {
  struct stat st;
  if (fstat(CJOBINIT_FD_SPEC, &st) != 0) fail(CJOBINIT_STAGE_SPEC, errno);
  if (st.st_size <= 0 || (uint64_t)st.st_size > CJOBINIT_JOB_MAX_BYTES) {
    fail(CJOBINIT_STAGE_SPEC, EINVAL);
  }
  spec->encoded_size = (size_t)st.st_size;
  spec->encoded = mmap(NULL, spec->encoded_size, PROT_READ, MAP_PRIVATE, CJOBINIT_FD_SPEC, 0);
  if (spec->encoded == MAP_FAILED) fail(CJOBINIT_STAGE_SPEC, errno);
  close(CJOBINIT_FD_SPEC);
  size_t slots = cjobinit_job_vector_slots(spec->encoded, spec->encoded_size);
  if (slots == 0) fail(CJOBINIT_STAGE_SPEC, EINVAL);
  spec->vectors_size = slots * sizeof(char *);
  spec->vectors = mmap(NULL, spec->vectors_size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (spec->vectors == MAP_FAILED) fail(CJOBINIT_STAGE_SPEC, errno);
  int rc = cjobinit_job_decode(spec->encoded, spec->encoded_size, spec->vectors, slots,
                               &spec->job);
  if (rc != 0) fail(CJOBINIT_STAGE_SPEC, -rc);
}

static int bring_up_loopback(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, "lo", 3);
  int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
  if (rc == 0) {
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    rc = ioctl(s, SIOCSIFFLAGS, &ifr);
  }
  int saved = errno;
  close(s);
  errno = saved;
  return rc;
}

// Step 5. Prepares the namespaces the clone created.
static void prepare_namespaces(const cjobinit_job *job) {
  // Nothing mounted in the job propagates back to the host.
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
    fail(CJOBINIT_STAGE_MOUNT_PRIVATE, errno);
  }
  // A /proc of our PID namespace: the job sees only its own processes.
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) {
    fail(CJOBINIT_STAGE_MOUNT_PROC, errno);
  }
  // A sysfs of our network namespace (read-only), so /sys/class/net shows only our devices.
  if (mount("sysfs", "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) {
    fail(CJOBINIT_STAGE_MOUNT_SYS, errno);
  }
  // Private scratch space: the host's /tmp and /dev/shm are shared by every job (and every
  // job runs as the same user), so files left there outlived the job, counted against no
  // limit and could be read by other jobs. A tmpfs of the job's mount namespace is sized,
  // its pages are charged to the job's memory cgroup, and it disappears with the namespace.
  const unsigned long scratch_flags = MS_NOSUID | MS_NODEV;
  if (mount("tmpfs", "/tmp", "tmpfs", scratch_flags, job->scratch_options) != 0) {
    fail(CJOBINIT_STAGE_MOUNT_TMP, errno);
  }
  if (mount("tmpfs", "/dev/shm", "tmpfs", scratch_flags, job->scratch_options) != 0) {
    fail(CJOBINIT_STAGE_MOUNT_SHM, errno);
  }
  if (bring_up_loopback() != 0) fail(CJOBINIT_STAGE_LOOPBACK, errno);
  if (sethostname(job->hostname, strlen(job->hostname)) != 0) {
    fail(CJOBINIT_STAGE_HOSTNAME, errno);
  }
}

// What the program's process tells the init on its close-on-exec report pipe, 12 bytes per
// message: TRYING {candidate} before each execve, or a failure {stage, errno, candidate}.
// EOF after a TRYING means that candidate runs.
enum { PROGRAM_TRYING = 0 };

static void tell_init(int report_fd, int32_t stage, int32_t error, int32_t candidate) {
  int32_t msg[3] = {stage, error, candidate};
  ssize_t n = write(report_fd, msg, sizeof msg);
  (void)n;
}

// Whether execvp would go on to the next PATH entry after this execve error.
static int search_goes_on(int error) {
  return error == ENOENT || error == ENOTDIR || error == ESTALE || error == ENODEV ||
         error == ETIMEDOUT || error == EACCES;
}

// The user's program: runs in the forked grandchild, reports failures on report_fd
// (close-on-exec, so a successful execve closes it and the init reads EOF). The command is
// looked up only here, with the job's credentials: a job learns whether a path exists or may
// be run exactly as much as its user could by itself, never what root can see (before, the
// worker checked the path as root and told `/root/x` missing apart from present).
static _Noreturn void run_program(const cjobinit_job *job, int report_fd) {
  int stage = CJOBINIT_STAGE_CREDENTIALS;
  if (drop_privileges(job->uid, job->gid) != 0) goto fail;
  stage = CJOBINIT_STAGE_CHDIR;
  if (chdir(job->working_directory) != 0) goto fail;
  stage = CJOBINIT_STAGE_NO_NEW_PRIVS;
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) goto fail;
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);

  // execvp's rules: skip entries that do not exist or cannot be entered; if any candidate
  // was refused (EACCES) and none ran, the answer is EACCES for the first refused one;
  // any other error ends the search.
  int error = ENOENT, failed = 0, denied = -1;
  for (int i = 0; job->candidates[i] != NULL; i++) {
    tell_init(report_fd, PROGRAM_TRYING, 0, i);
    execve(job->candidates[i], job->argv, job->envp);
    error = errno;
    failed = i;
    if (error == EACCES && denied < 0) denied = i;
    if (!search_goes_on(error)) break;
  }
  if (denied >= 0 && search_goes_on(error)) {
    error = EACCES;
    failed = denied;
  }
  tell_init(report_fd, CJOBINIT_STAGE_EXEC, error, failed);
  _exit(127);
fail:
  tell_init(report_fd, stage, errno, 0);
  _exit(127);
}

// Step 6. Forks the program and waits until it has exec'd (its report pipe closes) or
// reported why it could not; returns its PID once it runs.
static pid_t start_program(const cjobinit_job *job) {
  int exec_report[2];
  if (pipe2(exec_report, O_CLOEXEC) != 0) fail(CJOBINIT_STAGE_FORK, errno);
  int report_read = exec_report[0], report_write = exec_report[1];

  pid_t program = fork();
  if (program < 0) fail(CJOBINIT_STAGE_FORK, errno);
  if (program == 0) {
    close(report_read);
    close(CJOBINIT_FD_STATUS);
    run_program(job, report_write);
  }

  // The init keeps no handle on the output: the pipe's writers are the job's processes only.
  close(report_write);
  dup2(0, 1);
  dup2(0, 2);
  // Messages until EOF: the last TRYING names the program that runs, unless a failure follows.
  int32_t candidate = 0;
  for (;;) {
    int32_t msg[3];
    ssize_t n = read(report_read, msg, sizeof msg);
    if (n < 0 && errno == EINTR) continue;
    if (n != (ssize_t)sizeof msg) break;
    if (msg[0] == PROGRAM_TRYING) {
      candidate = msg[2];
      continue;
    }
    close(report_read);
    int st;
    while (waitpid(program, &st, 0) < 0 && errno == EINTR) {
    }
    cjobinit_fail(CJOBINIT_FD_STATUS, msg[0], msg[1], msg[2]);
  }
  close(report_read);
  cjobinit_report_send(CJOBINIT_FD_STATUS, CJOBINIT_REPORT_STARTED, 0, program, candidate);
  return program;
}

// Step 7. The job is needed no more once the program runs: its pages go back (the init lives
// as long as the job, and the environment alone may be tens of KiB).
static void forget_spec(spec_mapping *spec) {
  munmap(spec->vectors, spec->vectors_size);
  munmap(spec->encoded, spec->encoded_size);
  spec->encoded = spec->vectors = NULL;
}

// Step 8. Until the program exits: forwards signals to it and reaps every child, orphans
// included; then reports the program's wait status and exits with it.
static _Noreturn void supervise(uid_t uid, gid_t gid, pid_t program) {
  // Least privilege for the init too: from here it only forwards signals and reaps.
  if (drop_privileges(uid, gid) == 0) prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);

  sigset_t waited;
  sigemptyset(&waited);
  sigaddset(&waited, SIGCHLD);
  for (size_t i = 0; i < sizeof forwarded_signals / sizeof forwarded_signals[0]; i++) {
    sigaddset(&waited, forwarded_signals[i]);
  }
  for (;;) {
    siginfo_t info;
    int sig = sigwaitinfo(&waited, &info);
    if (sig < 0) continue;
    if (sig != SIGCHLD) {
      kill(program, sig);
      continue;
    }
    // SIGCHLD coalesces: reap everything that has exited, orphans included.
    for (;;) {
      int st;
      pid_t pid = waitpid(-1, &st, WNOHANG);
      if (pid <= 0) break;
      if (pid == program) {
        // The job ends with its program; the kernel kills what is left in the namespace
        // when its init exits.
        cjobinit_report_send(CJOBINIT_FD_STATUS, CJOBINIT_REPORT_EXITED, 0, st, 0);
        _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
      }
    }
  }
}

// PID 1 of the job: one call per step, in order. Every step either succeeds or ends the init
// through fail(), which reports the step.
int main(int argc, char **argv) {
  (void)argv;
  check_started_by_worker(argc);
  wait_for_release();
  reset_signals();
  spec_mapping spec;
  read_spec(&spec);
  prepare_namespaces(&spec.job);
  pid_t program = start_program(&spec.job);
  uid_t uid = spec.job.uid;
  gid_t gid = spec.job.gid;
  forget_spec(&spec);
  supervise(uid, gid, program);
}
