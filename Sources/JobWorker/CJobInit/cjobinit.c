// See include/cjobinit.h for what this file does and why it is restricted to
// async-signal-safe code after clone().
#define _GNU_SOURCE
#include "cjobinit.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

// The init's stack: it only calls into the kernel, so a small one is plenty.
#define INIT_STACK_SIZE (256 * 1024)

// Fixed descriptor numbers inside the init.
enum { FD_STATUS = 3, FD_RELEASE = 4 };

// Signals the init forwards to the program; SIGKILL and SIGSTOP cannot be caught and are
// delivered by the kernel to the whole namespace when they hit the init.
static const int forwarded_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2,
                                        SIGCONT, SIGWINCH};

static void report(int fd, int32_t kind, int32_t stage, int32_t value, int32_t candidate) {
  cjobinit_report r = {.kind = kind, .stage = stage, .value = value, .candidate = candidate};
  ssize_t n;
  do {
    n = write(fd, &r, sizeof r);
  } while (n < 0 && errno == EINTR);
}

// Every failure of the init ends here: one FAILED report {stage, errno} on the status pipe,
// which the worker turns into a start error naming the step, then exit. (As in runc's
// nsexec.c `bail`: no step exits silently, so no failure reaches the user as a bare exit code.)
static _Noreturn void fail_candidate(int status_fd, int stage, int error, int candidate) {
  report(status_fd, CJOBINIT_REPORT_FAILED, stage, error, candidate);
  _exit(127);
}

static _Noreturn void fail(int status_fd, int stage, int error) {
  fail_candidate(status_fd, stage, error, 0);
}

// Credentials through raw system calls: glibc's setuid() and friends broadcast to every thread
// glibc believes exists, and in a cloned copy of a multithreaded process that list is stale.
static int drop_privileges(uid_t uid, gid_t gid) {
  gid_t groups[1] = {gid};
  if (syscall(SYS_setgroups, 1, groups) != 0) return -1;
  if (syscall(SYS_setresgid, gid, gid, gid) != 0) return -1;
  if (syscall(SYS_setresuid, uid, uid, uid) != 0) return -1;
  return 0;
}

// Step 1. Signal state inherited from the worker must not leak into the job (an ignored
// SIGPIPE survives execve). Reset every disposition, then block everything: the init takes
// its signals synchronously with sigwaitinfo. Cannot fail for valid signal numbers.
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

// Step 2. Moves the descriptors the init needs to fixed numbers (status FD_STATUS, release
// FD_RELEASE, /dev/null on 0, output on 1 and 2) and closes every other descriptor the worker
// had open (sockets, other jobs' pipes): the init never execs, so close-on-exec would not
// protect them. Reports STDIO failures on the status pipe where it still is.
static void setup_descriptors(const cjobinit_spec *spec) {
  // First lift the three above all of their current numbers so that the dup2 calls below
  // cannot overwrite one another.
  int hi = spec->output_fd;
  if (spec->release_fd > hi) hi = spec->release_fd;
  if (spec->status_fd > hi) hi = spec->status_fd;
  int status = fcntl(spec->status_fd, F_DUPFD, hi + 1);
  // Reported on the status pipe where it still is (if status_fd itself is invalid, a bug of
  // the caller, the write fails too and the worker sees the init exit during setup).
  if (status < 0) fail(spec->status_fd, CJOBINIT_STAGE_STDIO, errno);
  int out = fcntl(spec->output_fd, F_DUPFD, hi + 1);
  if (out < 0) fail(status, CJOBINIT_STAGE_STDIO, errno);
  int release = fcntl(spec->release_fd, F_DUPFD, hi + 1);
  if (release < 0) fail(status, CJOBINIT_STAGE_STDIO, errno);
  int devnull = open("/dev/null", O_RDWR);
  if (devnull < 0) fail(status, CJOBINIT_STAGE_STDIO, errno);
  if (dup2(status, FD_STATUS) < 0) fail(status, CJOBINIT_STAGE_STDIO, errno);
  if (dup2(release, FD_RELEASE) < 0 || dup2(devnull, 0) < 0 || dup2(out, 1) < 0 ||
      dup2(out, 2) < 0) {
    fail(FD_STATUS, CJOBINIT_STAGE_STDIO, errno);
  }
  close_range(FD_STATUS + 2, ~0U, 0);
  fcntl(FD_STATUS, F_SETFD, FD_CLOEXEC);
  fcntl(FD_RELEASE, F_SETFD, FD_CLOEXEC);
}

// Step 3. Waits until the worker has placed the init in the job's cgroup, so that nothing
// below (and no byte of the program) runs outside its limits. EOF means the worker gave up
// on the launch (ECANCELED in the report).
static void wait_for_release(void) {
  char go;
  ssize_t n;
  do {
    n = read(FD_RELEASE, &go, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) fail(FD_STATUS, CJOBINIT_STAGE_RELEASE, n == 0 ? ECANCELED : errno);
  close(FD_RELEASE);
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

// Step 4. Prepares the namespaces the clone created.
static void prepare_namespaces(const cjobinit_spec *spec) {
  // Nothing mounted in the job propagates back to the host.
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
    fail(FD_STATUS, CJOBINIT_STAGE_MOUNT_PRIVATE, errno);
  }
  // A /proc of our PID namespace: the job sees only its own processes.
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) {
    fail(FD_STATUS, CJOBINIT_STAGE_MOUNT_PROC, errno);
  }
  // A sysfs of our network namespace (read-only), so /sys/class/net shows only our devices.
  if (mount("sysfs", "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) {
    fail(FD_STATUS, CJOBINIT_STAGE_MOUNT_SYS, errno);
  }
  // Private scratch space: the host's /tmp and /dev/shm are shared by every job (and every
  // job runs as the same user), so files left there outlived the job, counted against no
  // limit and could be read by other jobs. A tmpfs of the job's mount namespace is sized,
  // its pages are charged to the job's memory cgroup, and it disappears with the namespace.
  const unsigned long scratch_flags = MS_NOSUID | MS_NODEV;
  if (mount("tmpfs", "/tmp", "tmpfs", scratch_flags, spec->scratch_options) != 0) {
    fail(FD_STATUS, CJOBINIT_STAGE_MOUNT_TMP, errno);
  }
  if (mount("tmpfs", "/dev/shm", "tmpfs", scratch_flags, spec->scratch_options) != 0) {
    fail(FD_STATUS, CJOBINIT_STAGE_MOUNT_SHM, errno);
  }
  if (bring_up_loopback() != 0) fail(FD_STATUS, CJOBINIT_STAGE_LOOPBACK, errno);
  if (sethostname(spec->hostname, strlen(spec->hostname)) != 0) {
    fail(FD_STATUS, CJOBINIT_STAGE_HOSTNAME, errno);
  }
  prctl(PR_SET_NAME, "jobinit", 0, 0, 0);
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
static _Noreturn void run_program(const cjobinit_spec *spec, int report_fd) {
  int stage = CJOBINIT_STAGE_CREDENTIALS;
  if (drop_privileges(spec->uid, spec->gid) != 0) goto fail;
  stage = CJOBINIT_STAGE_CHDIR;
  if (chdir(spec->working_directory) != 0) goto fail;
  stage = CJOBINIT_STAGE_NO_NEW_PRIVS;
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) goto fail;
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);

  // execvp's rules: skip entries that do not exist or cannot be entered; if any candidate
  // was refused (EACCES) and none ran, the answer is EACCES for the first refused one;
  // any other error ends the search.
  int error = ENOENT, failed = 0, denied = -1;
  for (int i = 0; spec->candidates[i] != NULL; i++) {
    tell_init(report_fd, PROGRAM_TRYING, 0, i);
    execve(spec->candidates[i], spec->argv, spec->envp);
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

// Step 5. Forks the program and waits until it has exec'd (its report pipe closes) or
// reported why it could not; returns its PID once it runs.
static pid_t start_program(const cjobinit_spec *spec) {
  int exec_report[2];
  if (pipe2(exec_report, O_CLOEXEC) != 0) fail(FD_STATUS, CJOBINIT_STAGE_FORK, errno);
  int report_read = exec_report[0], report_write = exec_report[1];

  // _Fork: fork without atfork handlers, async-signal-safe.
  pid_t program = _Fork();
  if (program < 0) fail(FD_STATUS, CJOBINIT_STAGE_FORK, errno);
  if (program == 0) {
    close(report_read);
    close(FD_STATUS);
    run_program(spec, report_write);
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
    fail_candidate(FD_STATUS, msg[0], msg[1], msg[2]);
  }
  close(report_read);
  report(FD_STATUS, CJOBINIT_REPORT_STARTED, 0, program, candidate);
  return program;
}

// Step 6. Until the program exits: forwards signals to it and reaps every child, orphans
// included; then reports the program's wait status and exits with it.
static _Noreturn void supervise(const cjobinit_spec *spec, pid_t program) {
  // Least privilege for the init too: from here it only forwards signals and reaps.
  if (drop_privileges(spec->uid, spec->gid) == 0) prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);

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
        report(FD_STATUS, CJOBINIT_REPORT_EXITED, 0, st, 0);
        _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
      }
    }
  }
}

// PID 1 of the job: one call per step, in order. Every step either succeeds or ends the init
// through fail(), which reports the step.
static int init_main(void *arg) {
  const cjobinit_spec *spec = arg;
  reset_signals();
  setup_descriptors(spec);
  wait_for_release();
  prepare_namespaces(spec);
  pid_t program = start_program(spec);
  supervise(spec, program);
}

pid_t cjobinit_spawn(const cjobinit_spec *spec, int *pidfd) {
  void *stack = mmap(NULL, INIT_STACK_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) return -errno;
  int flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC |
              CLONE_PIDFD | SIGCHLD;
  *pidfd = -1;
  // Without CLONE_VM the child gets its own copy of the address space (stack included), so
  // the parent can unmap its copy right away.
  pid_t pid = clone(init_main, (char *)stack + INIT_STACK_SIZE, flags, (void *)spec, pidfd);
  int saved = errno;
  munmap(stack, INIT_STACK_SIZE);
  return pid < 0 ? -saved : pid;
}

int cjobinit_pidfd_signal(int pidfd, int signal) {
  return syscall(SYS_pidfd_send_signal, pidfd, signal, NULL, 0) == 0 ? 0 : -errno;
}

int cjobinit_pipe(int fds[2]) { return pipe2(fds, O_CLOEXEC) == 0 ? 0 : -errno; }
