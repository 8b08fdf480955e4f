#!/usr/bin/env python3
"""CLI path benchmark of the job worker (issue 13): what one `jobctl` call costs as a user
runs it (process start, certificates, TLS 1.3 handshake on loopback, one RPC), each command
RUNS times, p50/p90/mean, next to a process start in the same run (`/bin/true`).

Rows: `jobctl --help`, `jobctl list`, `jobctl run -- /bin/true`, then JOBS `jobctl start --
sleep 600` one after another (starts per second through the CLI, first and last tenth).

usage: sudo Benchmarks/job-cli.py BIN_DIR [RUNS] [JOBS]
  BIN_DIR holds jobworker, jobctl and jobinit (.build-release/release or .build/debug).
  RUNS: samples per command (50); JOBS: sequential `jobctl start` (300).

Needs root and cgroups. Loopback only; certificates, data directory and cgroup name private
to this run; every call has a timeout and the server (with its jobs) is stopped and its files
removed at the end, also on failure or Ctrl-C.
"""
import os, statistics, subprocess, sys, time

from jobbench import Server, pct, run_timed

bin_dir = os.path.abspath(sys.argv[1])
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 50
jobs = int(sys.argv[3]) if len(sys.argv) > 3 else 300
jobctl = f"{bin_dir}/jobctl"
server = None


def row(name, argv, env):
    run_timed(argv, env)  # warm-up: page cache
    samples = [run_timed(argv, env) for _ in range(runs)]
    elapsed = [e for e, _ in samples]
    cpu = [c for _, c in samples]
    print(f"{name:34s} p50 {pct(elapsed, .5):7.2f} ms  p90 {pct(elapsed, .9):7.2f} ms  "
          f"mean {statistics.mean(elapsed):7.2f} ms  (CPU p50 {pct(cpu, .5):6.2f} ms)")


try:
    server = Server(bin_dir, "cli", jobs)
    pki, port = server.pki, server.port
    env = dict(os.environ, JOBCTL_DIR=pki, JOBCTL_SERVER=f"127.0.0.1:{port}", JOBCTL_USER="admin")
    for _ in range(100):
        if subprocess.run([jobctl, "list", "--timeout", "1"], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=30).returncode == 0:
            break
        time.sleep(0.1)
    size = os.path.getsize(jobctl)
    print(f"== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, {os.cpu_count()} cores, "
          f"load {open('/proc/loadavg').read().split()[:3]}, {bin_dir}, "
          f"jobctl {size / 2**20:.1f} MiB")
    row("baseline: /bin/true", ["/bin/true"], env)
    row("jobctl --help", [jobctl, "--help"], env)
    row("jobctl list", [jobctl, "list"], env)
    row("jobctl run -- /bin/true", [jobctl, "run", "--", "/bin/true"], env)

    step = max(1, jobs // 10)
    t0 = t = time.perf_counter()
    for i in range(1, jobs + 1):
        run_timed([jobctl, "start", "--", "sleep", "600"], env)
        if i % step == 0 or i == jobs:
            now = time.perf_counter()
            n = step if i % step == 0 else i % step
            print(f"  jobctl start, jobs {i - n + 1:5d}-{i:5d}: {n / (now - t):7.1f} starts/s")
            t = now
    total = time.perf_counter() - t0
    print(f"{jobs} `jobctl start -- sleep 600` one after another: {total:.2f} s, "
          f"{jobs / total:.1f} starts/s")
finally:
    t = time.perf_counter()
    if server:
        server.stop()
    print(f"(server shutdown with the jobs: {time.perf_counter() - t:.1f} s)")
