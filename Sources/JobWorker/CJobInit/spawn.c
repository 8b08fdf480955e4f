// The worker's half of a launch: clone the child, which becomes the job's init by exec'ing
// jobinit. See include/cjobinit.h for why everything after clone() is async-signal-safe.
#define _GNU_SOURCE
#include "cjobinit.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <stdint.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

// The child's stack until it execs: it only calls into the kernel, so a small one is plenty.
#define CHILD_STACK_SIZE (64 * 1024)

// Where the child keeps the two descriptors that must not reach jobinit: the release pipe
// (closed once read) and the executable (close-on-exec, consumed by execveat itself).
enum { CHILD_FD_RELEASE = CJOBINIT_FD_SPEC + 1, CHILD_FD_INIT = CJOBINIT_FD_SPEC + 2 };

typedef struct {
  const cjobinit_descriptors *descriptors;
  int spec;
  const int *cgroup_tasks;
  size_t cgroup_task_count;
} child_arguments;

// Step 0. Joins the job's cgroup by writing "0" (the calling thread) to each v1 hierarchy's
// `tasks` file that the worker opened for it. The kernel moves a single thread that moves
// itself without taking the global threadgroup lock for writing, which costs an RCU grace
// period (measured here: 8-13 ms, more than the whole namespace set-up) for every process a
// parent writes into cgroup.procs. The child has one thread, so the thread is the process.
// Before anything else, so that every page the child and the init touch is the job's.
static void join_cgroup(const child_arguments *arguments) {
  for (size_t i = 0; i < arguments->cgroup_task_count; i++) {
    ssize_t n;
    do {
      n = write(arguments->cgroup_tasks[i], "0", 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) {
      cjobinit_fail(arguments->descriptors->status, CJOBINIT_STAGE_CGROUP, n < 0 ? errno : EIO,
                    0);
    }
  }
}

// Step 1. Moves what jobinit needs to its fixed numbers (/dev/null on 0, the output on 1 and
// 2, status CJOBINIT_FD_STATUS, spec CJOBINIT_FD_SPEC) and the release pipe and the
// executable just above, and closes every other descriptor the worker had open (sockets,
// other jobs' pipes, instance locks): they never reach the job. STDIO failures are reported
// on the status pipe wherever it is at that moment.
static void move_descriptors(const child_arguments *arguments) {
  const cjobinit_descriptors *d = arguments->descriptors;
  // Opened first and lifted with the others: a low number it got could be a target below.
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0) cjobinit_fail(d->status, CJOBINIT_STAGE_STDIO, errno, 0);
  // Lift every source above every current number and every target, so that the dup2 calls
  // below cannot overwrite one another.
  enum { STATUS, OUTPUT, SPEC, RELEASE, INIT, DEVNULL, SOURCES };
  const int sources[SOURCES] = {d->status, d->output, arguments->spec, d->release,
                                d->init_executable, devnull};
  int above = CHILD_FD_INIT + 1;
  for (int i = 0; i < SOURCES; i++) {
    if (sources[i] >= above) above = sources[i] + 1;
  }
  int lifted[SOURCES];
  for (int i = 0; i < SOURCES; i++) {
    lifted[i] = fcntl(sources[i], F_DUPFD, above);
    // Reported on the status pipe where it is now (if that descriptor itself is invalid, a bug
    // of the caller, the write fails too and the worker sees the init exit during setup).
    if (lifted[i] < 0) {
      cjobinit_fail(i == STATUS ? d->status : lifted[STATUS], CJOBINIT_STAGE_STDIO, errno, 0);
    }
  }
  const int status = lifted[STATUS], spec = lifted[SPEC], release = lifted[RELEASE];
  const int init = lifted[INIT], null = lifted[DEVNULL], output = lifted[OUTPUT];
  if (dup2(status, CJOBINIT_FD_STATUS) < 0) cjobinit_fail(status, CJOBINIT_STAGE_STDIO, errno, 0);
  if (dup2(spec, CJOBINIT_FD_SPEC) < 0 || dup2(release, CHILD_FD_RELEASE) < 0 ||
      dup3(init, CHILD_FD_INIT, O_CLOEXEC) < 0 || dup2(null, 0) < 0 || dup2(output, 1) < 0 ||
      dup2(output, 2) < 0) {
    cjobinit_fail(CJOBINIT_FD_STATUS, CJOBINIT_STAGE_STDIO, errno, 0);
  }
  close_range(CHILD_FD_INIT + 1, ~0U, 0);
}

// Step 2. Waits until the worker has placed the child in the job's cgroup, so that the init
// (its pages included) and every process it starts are charged to the job. EOF means the
// worker gave up on the launch (ECANCELED in the report).
static void wait_for_release(void) {
  char go;
  ssize_t n;
  do {
    n = read(CHILD_FD_RELEASE, &go, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) {
    cjobinit_fail(CJOBINIT_FD_STATUS, CJOBINIT_STAGE_RELEASE, n == 0 ? ECANCELED : errno, 0);
  }
  close(CHILD_FD_RELEASE);
}

// Step 3. Becomes jobinit. Its argument vector is the one word every user may see in
// /proc/1/cmdline and `ps`; its environment is empty; the job comes on CJOBINIT_FD_SPEC.
static _Noreturn void exec_init(void) {
  static char name[] = "jobinit";
  char *const argv[] = {name, NULL};
  char *const envp[] = {NULL};
  syscall(SYS_execveat, CHILD_FD_INIT, "", argv, envp, AT_EMPTY_PATH);
  cjobinit_fail(CJOBINIT_FD_STATUS, CJOBINIT_STAGE_EXEC_INIT, errno, 0);
}

static _Noreturn int child_main(void *argument) {
  const child_arguments *arguments = argument;
  join_cgroup(arguments);
  move_descriptors(arguments);
  wait_for_release();
  exec_init();
}

pid_t cjobinit_spawn(const cjobinit_job *job, const cjobinit_descriptors *descriptors,
                     int *pidfd) {
  return cjobinit_spawn_in_cgroup(job, descriptors, NULL, 0, pidfd);
}

// clone() with a new stack, or (cgroup_fd >= 0) clone3() with CLONE_INTO_CGROUP and no new
// stack: without CLONE_VM the child runs on its own copy of this thread's stack, as after
// fork, and calls child_main, which never returns.
static pid_t spawn(const cjobinit_job *job, const cjobinit_descriptors *descriptors,
                   const int *cgroup_tasks, size_t cgroup_task_count, int cgroup_fd, int *pidfd) {
  *pidfd = -1;
  int spec = cjobinit_job_encode(job);
  if (spec < 0) return spec;
  void *stack = MAP_FAILED;
  if (cgroup_fd < 0) {
    stack = mmap(NULL, CHILD_STACK_SIZE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
      int saved = errno;
      close(spec);
      return -saved;
    }
  }
  // The child starts with every signal blocked, so no handler of the worker ever runs in it;
  // the mask survives the exec and jobinit takes its signals with sigwaitinfo.
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  child_arguments arguments = {.descriptors = descriptors,
                               .spec = spec,
                               .cgroup_tasks = cgroup_tasks,
                               .cgroup_task_count = cgroup_task_count};
  int namespaces = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC;
  pid_t pid;
  if (cgroup_fd >= 0) {
    struct clone_args args = {.flags = (uint64_t)namespaces | CLONE_PIDFD | CLONE_INTO_CGROUP,
                              .pidfd = (uint64_t)(uintptr_t)pidfd,
                              .exit_signal = SIGCHLD,
                              .cgroup = (uint64_t)cgroup_fd};
    pid = (pid_t)syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) child_main(&arguments);
  } else {
    // Without CLONE_VM the child gets its own copy of the address space (stack and arguments
    // included), so the parent can unmap its copy right away.
    pid = clone(child_main, (char *)stack + CHILD_STACK_SIZE, namespaces | CLONE_PIDFD | SIGCHLD,
                &arguments, pidfd);
  }
  int saved = errno;
  pthread_sigmask(SIG_SETMASK, &previous, NULL);
  if (stack != MAP_FAILED) munmap(stack, CHILD_STACK_SIZE);
  close(spec);
  return pid < 0 ? -saved : pid;
}

pid_t cjobinit_spawn_in_cgroup(const cjobinit_job *job, const cjobinit_descriptors *descriptors,
                               const int *cgroup_tasks, size_t cgroup_task_count, int *pidfd) {
  return spawn(job, descriptors, cgroup_tasks, cgroup_task_count, -1, pidfd);
}

pid_t cjobinit_spawn_into_cgroup(const cjobinit_job *job, const cjobinit_descriptors *descriptors,
                                 int cgroup_fd, int *pidfd) {
  return spawn(job, descriptors, NULL, 0, cgroup_fd, pidfd);
}

int cjobinit_open_executable(const char *path) {
  int fd = open(path, O_PATH | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int saved = errno;
    close(fd);
    return -saved;
  }
  if (!S_ISREG(st.st_mode) || (st.st_mode & (S_IXUSR | S_IXGRP | S_IXOTH)) == 0) {
    close(fd);
    return -EACCES;
  }
  return fd;
}

int cjobinit_pidfd_signal(int pidfd, int signal) {
  return syscall(SYS_pidfd_send_signal, pidfd, signal, NULL, 0) == 0 ? 0 : -errno;
}

int cjobinit_pipe(int fds[2]) { return pipe2(fds, O_CLOEXEC) == 0 ? 0 : -errno; }
