// The worker's half of a launch: clone the child, which becomes the job's init by exec'ing
// jobinit. See include/cjobinit.h for why everything after clone() is async-signal-safe, and
// why the child shares the worker's memory until its exec (CLONE_VM | CLONE_VFORK).
#define _GNU_SOURCE
#include "cjobinit.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

// The child's stack until it execs: it only calls into the kernel, so a small one is plenty.
#define CHILD_STACK_SIZE (64 * 1024)

// Where the child keeps the executable, which must not reach jobinit: close-on-exec, consumed
// by execveat itself.
enum { CHILD_FD_INIT = CJOBINIT_FD_RELEASE + 1 };

typedef struct {
  const cjobinit_descriptors *descriptors;
  int spec;
  const int *cgroup_tasks;
  size_t cgroup_task_count;
  // > 0: the child was cloned with CLONE_FILES (it shares the worker's descriptor table) and
  // everything it needs is below this number (see "Launch slots").
  int unshare_below;
} child_arguments;

// Launch slots. A child cloned without CLONE_FILES gets a copy of the worker's whole
// descriptor table (dup_fd: a reference on every open file), and then closes every one it
// does not need (close_range: a flush and a release for each). The worker holds several
// descriptors per running job, so both grew with the number of jobs: with 1,000 running,
// the child's close_range alone cost about as much as creating its network namespace
// (`perf`, docs/benchmarks.md). Instead the child shares the worker's table
// (CLONE_FILES) and detaches from it with close_range(below, ~0U, CLOSE_RANGE_UNSHARE),
// which copies only the descriptors under `below`. What it needs must be down there: the
// launch moves them into one of a few sets of low numbers reserved at start-up (while the
// worker has few descriptors open), each held by a placeholder when no launch uses it, and
// puts the placeholders back once the child has exec'd (CLONE_VFORK: when the clone
// returns). When every set is in use, or without CLONE_VFORK (the child would still read
// the slots after the clone returned), the child is cloned with a copy of the table as
// before.
enum { SLOT_SETS = 4, SLOT_STATUS = 0, SLOT_OUTPUT, SLOT_SPEC, SLOT_RELEASE, SLOT_INIT, SLOTS };
// Set n is slot_numbers[n * SLOTS ...].
static int slot_numbers[SLOT_SETS * SLOTS];
static int slot_placeholder = -1;
// One above the highest slot: the child copies the descriptors below it.
static int slots_end = 0;
static atomic_uint slots_busy;
static pthread_once_t slots_once = PTHREAD_ONCE_INIT;

static void reserve_slots(void) {
  int placeholder = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (placeholder < 0) return;
  int end = placeholder + 1;
  for (int i = 0; i < SLOT_SETS * SLOTS; i++) {
    // The lowest free number.
    int fd = fcntl(placeholder, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
      while (i-- > 0) close(slot_numbers[i]);
      close(placeholder);
      return;
    }
    slot_numbers[i] = fd;
    if (fd >= end) end = fd + 1;
  }
  slots_end = end;
  slot_placeholder = placeholder;
}

void cjobinit_reserve_launch_slots(void) { pthread_once(&slots_once, reserve_slots); }

size_t cjobinit_launch_slots(int *numbers, size_t capacity) {
  if (slot_placeholder < 0 || capacity < 1 + SLOT_SETS * SLOTS) return 0;
  numbers[0] = slot_placeholder;
  for (int i = 0; i < SLOT_SETS * SLOTS; i++) numbers[1 + i] = slot_numbers[i];
  return 1 + SLOT_SETS * SLOTS;
}

// Takes a free set of slots and moves the child's descriptors into it (`moved` then names
// them); returns the set, or -1 (none free, or none reserved): the caller clones without
// sharing the table.
static int take_slots(const cjobinit_descriptors *descriptors, int spec,
                      cjobinit_descriptors *moved, int *moved_spec) {
  cjobinit_reserve_launch_slots();
  if (slot_placeholder < 0) return -1;
  unsigned busy = atomic_load(&slots_busy);
  int set;
  do {
    set = 0;
    while (set < SLOT_SETS && (busy & (1u << set))) set++;
    if (set == SLOT_SETS) return -1;
  } while (!atomic_compare_exchange_weak(&slots_busy, &busy, busy | (1u << set)));
  const int *n = &slot_numbers[set * SLOTS];
  // dup3 replaces the placeholder atomically: the number is never free for another thread.
  if (dup3(descriptors->status, n[SLOT_STATUS], O_CLOEXEC) < 0 ||
      dup3(descriptors->output, n[SLOT_OUTPUT], O_CLOEXEC) < 0 ||
      dup3(spec, n[SLOT_SPEC], O_CLOEXEC) < 0 ||
      dup3(descriptors->release, n[SLOT_RELEASE], O_CLOEXEC) < 0 ||
      dup3(descriptors->init_executable, n[SLOT_INIT], O_CLOEXEC) < 0) {
    for (int slot = 0; slot < SLOTS; slot++) dup3(slot_placeholder, n[slot], O_CLOEXEC);
    atomic_fetch_and(&slots_busy, ~(1u << set));
    return -1;
  }
  *moved = (cjobinit_descriptors){.init_executable = n[SLOT_INIT],
                                  .output = n[SLOT_OUTPUT],
                                  .release = n[SLOT_RELEASE],
                                  .status = n[SLOT_STATUS]};
  *moved_spec = n[SLOT_SPEC];
  return set;
}

// Puts the placeholders back (closing the worker's extra references to the job's pipes),
// once the child no longer uses the shared table.
static void give_back_slots(int set) {
  for (int slot = 0; slot < SLOTS; slot++) {
    dup3(slot_placeholder, slot_numbers[set * SLOTS + slot], O_CLOEXEC);
  }
  atomic_fetch_and(&slots_busy, ~(1u << set));
}

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
// 2, status CJOBINIT_FD_STATUS, spec CJOBINIT_FD_SPEC, release CJOBINIT_FD_RELEASE) and the
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
  if (dup2(spec, CJOBINIT_FD_SPEC) < 0 || dup2(release, CJOBINIT_FD_RELEASE) < 0 ||
      dup3(init, CHILD_FD_INIT, O_CLOEXEC) < 0 || dup2(null, 0) < 0 || dup2(output, 1) < 0 ||
      dup2(output, 2) < 0) {
    cjobinit_fail(CJOBINIT_FD_STATUS, CJOBINIT_STAGE_STDIO, errno, 0);
  }
  close_range(CHILD_FD_INIT + 1, ~0U, 0);
}

// Step 2. Becomes jobinit, whose first step is to wait for its release (CJOBINIT_FD_RELEASE).
// Its argument vector is the one word every user may see in /proc/1/cmdline and `ps`; its
// environment is empty; the job comes on CJOBINIT_FD_SPEC. A successful exec is also what
// lets the worker's thread go on (CLONE_VFORK).
static _Noreturn void exec_init(void) {
  static char name[] = "jobinit";
  char *const argv[] = {name, NULL};
  char *const envp[] = {NULL};
  syscall(SYS_execveat, CHILD_FD_INIT, "", argv, envp, AT_EMPTY_PATH);
  cjobinit_fail(CJOBINIT_FD_STATUS, CJOBINIT_STAGE_EXEC_INIT, errno, 0);
}

// Step 0b (only when cloned with CLONE_FILES). Leaves the worker's descriptor table for a
// private copy of its descriptors below `unshare_below` (the launch slots and whatever the
// worker had open there), so that nothing this process does from here on changes the
// worker's table, and the copy costs the same however many descriptors the worker holds.
static void unshare_descriptors(const child_arguments *arguments) {
  if (close_range((unsigned)arguments->unshare_below, ~0U, CLOSE_RANGE_UNSHARE) != 0) {
    cjobinit_fail(arguments->descriptors->status, CJOBINIT_STAGE_STDIO, errno, 0);
  }
}

static _Noreturn int child_main(void *argument) {
  const child_arguments *arguments = argument;
  join_cgroup(arguments);
  if (arguments->unshare_below > 0) unshare_descriptors(arguments);
  move_descriptors(arguments);
  exec_init();
}

pid_t cjobinit_spawn(const cjobinit_job *job, const cjobinit_descriptors *descriptors,
                     int *pidfd) {
  return cjobinit_spawn_in_cgroup(job, descriptors, NULL, 0, pidfd);
}

// ThreadSanitizer instruments the child's code and intercepts its libc calls: with CLONE_VM
// they would update the suspended thread's sanitizer state (its shadow call stack, its table
// of descriptors) as if the worker itself had made them. A TSan build (the test suite's,
// never a release) therefore clones as fork does, the launch as it was before CLONE_VM; the
// plain test suite runs the shared-memory path.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SHARE_MEMORY 0
#endif
#endif
#ifndef SHARE_MEMORY
#define SHARE_MEMORY 1
#endif

#if defined(__x86_64__) && SHARE_MEMORY
// clone3() whose child calls fn(arg) on the new stack given in args and exits with its
// result; the parent gets the child's PID or -errno. glibc exports no clone3 wrapper, and
// syscall(SYS_clone3, ...) cannot start a child on another stack: the child would return
// from syscall() through a frame on the parent's stack. (Linux x86-64 ABI: the kernel sets
// the child's stack pointer to stack + stack_size; syscall clobbers only rcx and r11, so fn
// and arg survive in r8 and r9; the stack top is page-aligned, so fn starts with the stack
// aligned as after a call.)
long cjobinit_clone3_on_stack(struct clone_args *args, size_t size, int (*fn)(void *),
                              void *arg) __attribute__((visibility("hidden")));
__asm__(".text\n"
        ".globl cjobinit_clone3_on_stack\n"
        ".hidden cjobinit_clone3_on_stack\n"
        ".type cjobinit_clone3_on_stack, @function\n"
        "cjobinit_clone3_on_stack:\n"
        "  mov %rdx, %r8\n"
        "  mov %rcx, %r9\n"
        "  mov $435, %eax\n"  // SYS_clone3
        "  syscall\n"
        "  test %rax, %rax\n"
        "  jz 1f\n"
        "  ret\n"
        "1:\n"
        "  xor %ebp, %ebp\n"
        "  mov %r9, %rdi\n"
        "  call *%r8\n"
        "  mov %eax, %edi\n"
        "  mov $60, %eax\n"  // SYS_exit (child_main never returns)
        "  syscall\n"
        "  hlt\n"
        ".size cjobinit_clone3_on_stack, .-cjobinit_clone3_on_stack\n");
#define SHARED_CLONE3 1
#else
#define SHARED_CLONE3 0
#endif

// Clones the child with CLONE_VM | CLONE_VFORK, as glibc's posix_spawn does: the child runs on
// its own small stack in the worker's address space, and the calling thread waits until the
// child has exec'd jobinit (or exited). Nothing of the worker's memory is copied: without
// CLONE_VM every start copied the worker's page tables (dup_mmap, growing with the worker's
// mappings) and then paid copy-on-write faults in the worker until the child's exec.
//
// Sharing the memory is safe because the child writes only its own stack and the calling
// thread's errno (it runs with that thread's TLS; the thread is suspended until the exec,
// and reads errno only when the clone failed, when no child ran), calls only raw system
// calls and their libc wrappers (no locks, no malloc), and runs with every signal blocked,
// so no handler of the worker runs in it. The other threads of the worker never touch the
// suspended thread's stack or TLS.
//
// cgroup_fd >= 0: clone3() with CLONE_INTO_CGROUP (on other architectures than x86-64,
// without CLONE_VM: the child then runs on its own copy of this thread's stack, as after
// fork, and calls child_main, which never returns).
static pid_t spawn(const cjobinit_job *job, const cjobinit_descriptors *descriptors,
                   const int *cgroup_tasks, size_t cgroup_task_count, int cgroup_fd, int *pidfd) {
  *pidfd = -1;
  int spec = cjobinit_job_encode(job);
  if (spec < 0) return spec;
  void *stack = mmap(NULL, CHILD_STACK_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) {
    int saved = errno;
    close(spec);
    return -saved;
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
  // Sharing the descriptor table needs the calling thread held until the exec (CLONE_VFORK).
  const int held = cgroup_fd >= 0 ? SHARED_CLONE3 : SHARE_MEMORY;
  cjobinit_descriptors in_slots;
  int slots = held ? take_slots(descriptors, spec, &in_slots, &arguments.spec) : -1;
  if (slots >= 0) {
    arguments.descriptors = &in_slots;
    arguments.unshare_below = slots_end;
  }
  const int files = slots >= 0 ? CLONE_FILES : 0;
  pid_t pid;
  int error = 0;
  if (cgroup_fd >= 0) {
    struct clone_args args = {.flags = (uint64_t)(namespaces | files) | CLONE_PIDFD |
                                       CLONE_INTO_CGROUP,
                              .pidfd = (uint64_t)(uintptr_t)pidfd,
                              .exit_signal = SIGCHLD,
                              .cgroup = (uint64_t)cgroup_fd};
#if SHARED_CLONE3
    args.flags |= CLONE_VM | CLONE_VFORK;
    args.stack = (uint64_t)(uintptr_t)stack;
    args.stack_size = CHILD_STACK_SIZE;
    long rc = cjobinit_clone3_on_stack(&args, sizeof args, child_main, &arguments);
    pid = rc < 0 ? -1 : (pid_t)rc;
    error = rc < 0 ? (int)-rc : 0;
#else
    pid = (pid_t)syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) child_main(&arguments);
    error = errno;
#endif
  } else {
    int share = SHARE_MEMORY ? CLONE_VM | CLONE_VFORK : 0;
    pid = clone(child_main, (char *)stack + CHILD_STACK_SIZE,
                namespaces | files | share | CLONE_PIDFD | SIGCHLD, &arguments, pidfd);
    error = errno;
  }
  pthread_sigmask(SIG_SETMASK, &previous, NULL);
  if (slots >= 0) give_back_slots(slots);
  // The child has exec'd or exited (or, without SHARE_MEMORY, runs on its own copy): its
  // stack is free.
  munmap(stack, CHILD_STACK_SIZE);
  close(spec);
  return pid < 0 ? -error : pid;
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

int cjobinit_pidfd_open(pid_t pid) {
  // pidfds are close-on-exec always.
  long fd = syscall(SYS_pidfd_open, pid, 0);
  return fd < 0 ? -errno : (int)fd;
}

int cjobinit_pipe(int fds[2]) { return pipe2(fds, O_CLOEXEC) == 0 ? 0 : -errno; }

int cjobinit_release_channel(int fds[2]) {
  return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0 ? 0 : -errno;
}

int cjobinit_release(int fd) {
  static const char go = 1;
  ssize_t n;
  do {
    n = send(fd, &go, 1, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n == 1 ? 0 : -(n < 0 ? errno : EIO);
}
