#!/usr/bin/env python3
"""Host memory per running job (issue 13: target <= 256 KiB above the program itself).

Measured as the host sees it, from /proc/meminfo, kernel included (cgroups, namespaces,
pipes, page tables, kernel stacks, the worker's own per-job state):

1. baseline: JOBS plain `sleep 600` processes started from this script; growth of
   MemTotal - MemAvailable and of its parts, per process: what the program itself costs.
2. jobs: a private `jobworker`, JOBS `sleep 600` jobs started one after another on one
   connection; the same growth per job, and the worker's RSS growth per job.

Prints, per field, the plain process's cost, the job's cost and the difference (the job's
overhead), then the slab caches that grew most per job above the baseline (/proc/slabinfo).
Each measurement waits a few seconds before each reading, so that deferred frees settle. Other processes on
the host move these figures too: run it on a quiet machine (hold the bench lock).

usage: sudo Benchmarks/job-memory.py BIN_DIR [JOBS] [ROUNDS]
  BIN_DIR holds jobworker, jobctl and jobinit (.build-release/release or .build/debug).
  JOBS: how many processes and jobs (500); ROUNDS: how many times both are measured, one
  after the other (3); the medians are printed.

Needs root, cgroups and the python `grpcio` module. Every process and job it started is
stopped and the server's files removed at the end, also on failure or Ctrl-C.
"""
import os, statistics, subprocess, sys, time

from jobbench import Server, rss_mib, start_request

bin_dir = os.path.abspath(sys.argv[1])
jobs = int(sys.argv[2]) if len(sys.argv) > 2 else 500
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
settle = 3 if jobs >= 50 else 1
FIELDS = ["AnonPages", "Shmem", "Slab", "SReclaimable", "SUnreclaim", "Percpu", "PageTables",
          "KernelStack"]
# The parts that add up to what a process or job holds (Slab = SReclaimable + SUnreclaim).
PARTS = ["AnonPages", "Shmem", "Slab", "Percpu", "PageTables", "KernelStack"]


def meminfo():
    """KiB per /proc/meminfo field, and `used` = MemTotal - MemAvailable."""
    values = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, rest = line.split(":", 1)
            values[name] = int(rest.split()[0])
    values["used"] = values["MemTotal"] - values["MemAvailable"]
    return values


def slabs():
    """Bytes held per slab cache (objects x object size)."""
    sizes = {}
    with open("/proc/slabinfo") as f:
        for line in f.readlines()[2:]:
            fields = line.split()
            sizes[fields[0]] = int(fields[2]) * int(fields[3])
    return sizes


def snapshot():
    time.sleep(settle)
    return meminfo(), slabs()


def growth(before, after, count):
    """Per-item growth in KiB (meminfo) and bytes (slabinfo)."""
    (m0, s0), (m1, s1) = before, after
    per_field = {k: (m1[k] - m0[k]) / count for k in ["used"] + FIELDS}
    per_slab = {k: (s1.get(k, 0) - s0.get(k, 0)) / count for k in set(s0) | set(s1)}
    return per_field, per_slab


def measure_plain():
    """Growth per plain `sleep` process (the program itself, fork + exec as a shell does)."""
    global sleepers
    before = snapshot()
    for _ in range(jobs):
        sleepers.append(subprocess.Popen(["sleep", "600"], stdout=subprocess.DEVNULL))
    result = growth(before, snapshot(), jobs)
    for process in sleepers:
        process.kill()
    for process in sleepers:
        process.wait()
    sleepers = []
    return result


def measure_jobs():
    """Growth per `sleep` job on a fresh server, and the worker's RSS growth per job (KiB).
    The warm-up jobs make the server's one-time state (the connection, the first job's
    allocations) part of the "before"."""
    global server
    server = Server(bin_dir, "memory", jobs)
    channel, start = server.start_job_call()
    for _ in range(5):
        start(start_request("/bin/true"), timeout=30)
    sleep_request = start_request("sleep", "600")
    before = snapshot()
    rss_before = rss_mib(server.process.pid)
    for _ in range(jobs):
        start(sleep_request, timeout=30)
    after = snapshot()
    rss = (rss_mib(server.process.pid) - rss_before) * 1024 / jobs
    channel.close()
    server.stop()
    server = None
    return growth(before, after, jobs) + (rss,)


server = None
sleepers = []
try:
    print(f"== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, {os.cpu_count()} cores, "
          f"load {open('/proc/loadavg').read().split()[:3]}, {bin_dir}, {jobs} each, "
          f"{rounds} rounds")
    plains, runs = [], []
    for r in range(rounds):
        plains.append(measure_plain())
        runs.append(measure_jobs())
        print(f"round {r + 1}: MemTotal-MemAvailable per plain sleep {plains[-1][0]['used']:.1f} "
              f"KiB, per sleep job {runs[-1][0]['used']:.1f} KiB")
    median = lambda values: statistics.median(values)
    plain = {k: median([p[0][k] for p in plains]) for k in ["used"] + FIELDS}
    job = {k: median([j[0][k] for j in runs]) for k in ["used"] + FIELDS}
    print(f"{'KiB, median of rounds':22} {'plain sleep':>12} {'sleep job':>12} {'job overhead':>13}")
    for name in ["used"] + FIELDS:
        label = "MemTotal-MemAvailable" if name == "used" else name
        print(f"{label:22} {plain[name]:12.1f} {job[name]:12.1f} {job[name] - plain[name]:13.1f}")
    rss = median([j[2] for j in runs])
    print(f"worker RSS growth per job: {rss:.1f} KiB (part of AnonPages above)")
    overhead = job["used"] - plain["used"]
    print(f"host memory per job above the program: {overhead:.1f} KiB (target <= 256 KiB)")
    # MemAvailable also moves with every other process's page cache and heap; the kernel's
    # own counters (and the anonymous pages) are steadier on a shared host.
    parts = sum(job[k] - plain[k] for k in PARTS)
    print(f"the same as the sum of {' + '.join(PARTS)}: {parts:.1f} KiB")
    print("slab caches grown most per job, above a plain sleep (bytes, median of rounds):")
    names = set().union(*(j[1] for j in runs))
    extra = {k: median([j[1].get(k, 0) for j in runs]) - median([p[1].get(k, 0) for p in plains])
             for k in names}
    for name, size in sorted(extra.items(), key=lambda item: -item[1])[:15]:
        print(f"  {name:28} {size:9.0f}")
finally:
    for process in sleepers:
        process.kill()
        process.wait()
    t = time.perf_counter()
    if server:
        server.stop()
    print(f"(server shutdown with the jobs: {time.perf_counter() - t:.1f} s)")
