#!/usr/bin/env python3
"""Start path benchmark of the job worker (issue 13), two rows:

1. latency: `StartJob` of `/bin/true` on one open mutual-TLS connection, RUNS times, p50/p90,
   next to the kernel baseline in the same run, interleaved with it: `unshare --pid --fork
   --mount --net --mount-proc /bin/true` (fork + exec of unshare included, as a shell pays it).
2. rate: JOBS `sleep 600` jobs started one after another on that connection; starts per
   second for each tenth of them (flat or not with the number running), then row 1 again
   (RUNS/2 samples) with all of them running, the server's RSS and its CPU use over 5 idle
   seconds.

usage: sudo Benchmarks/job-start.py BIN_DIR [RUNS] [JOBS]
  BIN_DIR holds jobworker, jobctl and jobinit (.build-release/release or .build/debug).
  RUNS: latency samples (200); JOBS: concurrent jobs of row 2 (300; 1000 for the scale row).

Needs root, cgroups and the python `grpcio` module. Loopback only; certificates, data
directory and cgroup name private to this run. Every step is bounded (RPC deadline 30 s,
the whole run well under 10 minutes for 1000 jobs) and the server (with its jobs) is stopped
and its files removed at the end, also on failure or Ctrl-C.
"""
import os, statistics, subprocess, sys, time

from jobbench import Server, pct, proc_stat, rss_mib, run_timed, start_request

bin_dir = os.path.abspath(sys.argv[1])
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 200
jobs = int(sys.argv[3]) if len(sys.argv) > 3 else 300
server = None


try:
    server = Server(bin_dir, "start", jobs)
    channel, start = server.start_job_call()
    print(f"== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, {os.cpu_count()} cores, "
          f"load {open('/proc/loadavg').read().split()[:3]}, {bin_dir}")

    # Row 1: latency, interleaved with the baseline so that both see the same load.
    true_request = start_request("/bin/true")
    for _ in range(5):  # warm-up: first connection use, page cache
        start(true_request, timeout=30)
    baseline_cmd = ["unshare", "--pid", "--fork", "--mount", "--net", "--mount-proc", "/bin/true"]

    def latencies(n):
        """n StartJob /bin/true and n baselines, interleaved; milliseconds."""
        starts, kernel = [], []
        for _ in range(n):
            t = time.perf_counter()
            start(true_request, timeout=30)
            starts.append((time.perf_counter() - t) * 1000)
            kernel.append(run_timed(baseline_cmd)[0])
        return starts, kernel
    starts, kernel = latencies(runs)
    print(f"StartJob /bin/true, {runs} runs:     p50 {pct(starts, .5):6.2f} ms  "
          f"p90 {pct(starts, .9):6.2f} ms  mean {statistics.mean(starts):6.2f} ms")
    print(f"baseline (unshare ... /bin/true): p50 {pct(kernel, .5):6.2f} ms  "
          f"p90 {pct(kernel, .9):6.2f} ms  mean {statistics.mean(kernel):6.2f} ms")
    print(f"ratio p50: {pct(starts, .5) / pct(kernel, .5):.2f}x (target <= 1.5x)")

    # Row 2: starts per second with a growing number of running jobs.
    sleep_request = start_request("sleep", "600")
    step = max(1, jobs // 10)
    t0 = time.perf_counter()
    t = t0
    for i in range(1, jobs + 1):
        start(sleep_request, timeout=30)
        if i % step == 0 or i == jobs:
            now = time.perf_counter()
            n = step if i % step == 0 else i % step
            print(f"  jobs {i - n + 1:5d}-{i:5d}: {n / (now - t):7.1f} starts/s")
            t = now
    total = time.perf_counter() - t0
    print(f"{jobs} sleep jobs one after another: {total:.2f} s, {jobs / total:.1f} starts/s "
          f"(target >= 200, flat)")
    # Row 1 again with every job of row 2 running: a start must not cost more with them.
    starts, kernel = latencies(max(1, runs // 2))
    print(f"with {jobs} jobs running: StartJob /bin/true p50 {pct(starts, .5):6.2f} ms, "
          f"baseline p50 {pct(kernel, .5):6.2f} ms ({len(starts)} runs)")
    pid = server.process.pid
    rss = rss_mib(pid)
    ticks = proc_stat(pid)
    time.sleep(5)
    idle = (proc_stat(pid) - ticks) / os.sysconf("SC_CLK_TCK") / 5 * 100
    print(f"with {jobs} jobs running: server RSS {rss:.1f} MiB, idle CPU {idle:.2f}% of a core")
    channel.close()
finally:
    t = time.perf_counter()
    if server:
        server.stop()
    print(f"(server shutdown with the jobs: {time.perf_counter() - t:.1f} s)")
