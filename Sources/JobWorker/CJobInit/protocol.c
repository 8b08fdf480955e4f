// The two formats the worker and jobinit share: the report on the status pipe and the
// encoded job on the spec memfd. Both sides link this one file (see include/cjobinit.h).
#define _GNU_SOURCE
#include "cjobinit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

void cjobinit_report_send(int fd, int32_t kind, int32_t stage, int32_t value, int32_t candidate) {
  cjobinit_report r = {.kind = kind, .stage = stage, .value = value, .candidate = candidate};
  ssize_t n;
  do {
    n = write(fd, &r, sizeof r);
  } while (n < 0 && errno == EINTR);
}

// Every failure of a launch ends here: one FAILED report {stage, errno} on the status pipe,
// which the worker turns into a start error naming the step, then exit. (As in runc's
// nsexec.c `bail`: no step exits silently, so no failure reaches the user as a bare exit code.)
_Noreturn void cjobinit_fail(int fd, int32_t stage, int32_t error, int32_t candidate) {
  cjobinit_report_send(fd, CJOBINIT_REPORT_FAILED, stage, error, candidate);
  _exit(127);
}

// The encoded job: this header, then every string NUL-terminated and packed, in this order:
// the candidates, argv, envp, working_directory, hostname, scratch_options. The magic and the
// version make a worker and an init of different releases fail loudly (SPEC, EINVAL) instead
// of misreading each other.
typedef struct {
  uint32_t magic;
  uint32_t version;
  uint32_t uid;
  uint32_t gid;
  uint32_t candidates;
  uint32_t arguments;
  uint32_t environment;
  uint32_t reserved;
} encoded_header;

enum { JOB_MAGIC = 0x4a4f4249 /* "JOBI" */, JOB_VERSION = 1, FIXED_STRINGS = 3 };

static size_t vector_length(char *const *vector) {
  size_t n = 0;
  while (vector[n] != NULL) n++;
  return n;
}

static char *put_strings(char *out, char *const *strings, size_t count) {
  for (size_t i = 0; i < count; i++) {
    size_t length = strlen(strings[i]) + 1;
    memcpy(out, strings[i], length);
    out += length;
  }
  return out;
}

int cjobinit_job_encode(const cjobinit_job *job) {
  encoded_header header = {
      .magic = JOB_MAGIC,
      .version = JOB_VERSION,
      .uid = job->uid,
      .gid = job->gid,
      .candidates = vector_length(job->candidates),
      .arguments = vector_length(job->argv),
      .environment = vector_length(job->envp),
  };
  if (header.candidates == 0) return -EINVAL;
  char *const fixed[FIXED_STRINGS] = {(char *)job->working_directory, (char *)job->hostname,
                                      (char *)job->scratch_options};
  char *const *groups[] = {job->candidates, job->argv, job->envp, fixed};
  const size_t counts[] = {header.candidates, header.arguments, header.environment,
                           FIXED_STRINGS};
  size_t size = sizeof header;
  for (size_t g = 0; g < 4; g++) {
    for (size_t i = 0; i < counts[g]; i++) {
      size += strlen(groups[g][i]) + 1;
      if (size > CJOBINIT_JOB_MAX_BYTES) return -EINVAL;
    }
  }

  char *buffer = malloc(size);
  if (buffer == NULL) return -ENOMEM;
  memcpy(buffer, &header, sizeof header);
  char *out = buffer + sizeof header;
  for (size_t g = 0; g < 4; g++) out = put_strings(out, groups[g], counts[g]);

  int fd = memfd_create("jobinit-spec", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  int error = fd < 0 ? errno : 0;
  for (size_t written = 0; error == 0 && written < size;) {
    ssize_t n = write(fd, buffer + written, size - written);
    if (n < 0 && errno != EINTR) error = errno;
    if (n > 0) written += (size_t)n;
  }
  free(buffer);
  // Sealed: the init may trust that the size it reads is the size that stays.
  if (error == 0 && (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE |
                                                F_SEAL_SEAL) != 0 ||
                     lseek(fd, 0, SEEK_SET) != 0)) {
    error = errno;
  }
  if (error != 0) {
    if (fd >= 0) close(fd);
    return -error;
  }
  return fd;
}

size_t cjobinit_job_vector_slots(const char *buffer, size_t size) {
  encoded_header header;
  if (size < sizeof header || size > CJOBINIT_JOB_MAX_BYTES) return 0;
  memcpy(&header, buffer, sizeof header);
  if (header.magic != JOB_MAGIC || header.version != JOB_VERSION) return 0;
  // Each string takes at least one byte, which bounds the counts by the size.
  size_t strings = (size_t)header.candidates + header.arguments + header.environment;
  if (header.candidates == 0 || strings > size) return 0;
  return strings + 3;  // a NULL after each vector
}

int cjobinit_job_decode(const char *buffer, size_t size, char **vectors, size_t slots,
                        cjobinit_job *job) {
  size_t needed = cjobinit_job_vector_slots(buffer, size);
  if (needed == 0 || slots < needed) return -EINVAL;
  encoded_header header;
  memcpy(&header, buffer, sizeof header);
  const size_t counts[] = {header.candidates, header.arguments, header.environment,
                           FIXED_STRINGS};
  const char *fixed[FIXED_STRINGS];
  char **starts[3];
  const char *in = buffer + sizeof header;
  const char *end = buffer + size;
  char **slot = vectors;
  for (size_t g = 0; g < 4; g++) {
    if (g < 3) starts[g] = slot;
    for (size_t i = 0; i < counts[g]; i++) {
      const char *nul = memchr(in, '\0', (size_t)(end - in));
      if (nul == NULL) return -EINVAL;
      // The strings are never written: execve and mount take them as they are.
      if (g < 3) {
        *slot++ = (char *)in;
      } else {
        fixed[i] = in;
      }
      in = nul + 1;
    }
    if (g < 3) *slot++ = NULL;
  }
  if (in != end) return -EINVAL;
  *job = (cjobinit_job){
      .candidates = starts[0],
      .argv = starts[1],
      .envp = starts[2],
      .working_directory = fixed[0],
      .hostname = fixed[1],
      .scratch_options = fixed[2],
      .uid = header.uid,
      .gid = header.gid,
  };
  return 0;
}
