#!/usr/bin/env python3
"""Status ingest throughput (issue 12): presence updates per second that one `status` stores.

Starts a private `status` (statusbench.Status) on STORE (sqlite or postgres), then SENDERS
threads, each playing one gateway, send `PresenceIngest/ReportPresence` batches of BATCH
records (what a gateway sends: ≤ 5 000 per call) covering USERS distinct users round robin,
back to back, as fast as status answers. Every record says "seen 0 ms ago", so status stores
its own now and every batch after the first round is a real update of every row it names.
The batches are encoded once before the run: the generator costs almost nothing per call.

After WARMUP s (the first inserts, the pool's connections), measures over SECONDS s: records
accepted per second, calls and their latency p50/p99, CPU of status, of its PostgreSQL
backends (from /proc, the pids pg_stat_activity names for application `tenten-status` on this
database: give the benchmark a database of its own) and of the generator. Then checks the
count is exact: every user online, both through `FetchOnlineUsersInLast3Mins` and in the
store itself, and nothing rejected. Prints one JSON line; exits 1 when a check fails (never
on a timing).

usage: status-ingest.py BIN_DIR STORE [--users N] [--batch B] [--senders S] [--seconds T]
       [--warmup W]
CI's short form: status-ingest.py .build/debug sqlite --users 20000 --seconds 2 --warmup 1
"""
import argparse, json, os, resource, sys, threading, time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import statusbench as sb

parser = argparse.ArgumentParser()
parser.add_argument("bin_dir")
parser.add_argument("store", choices=["sqlite", "postgres"])
parser.add_argument("--users", type=int, default=200_000)
parser.add_argument("--batch", type=int, default=5_000)
parser.add_argument("--senders", type=int, default=4)
parser.add_argument("--seconds", type=float, default=20)
parser.add_argument("--warmup", type=float, default=3)
args = parser.parse_args()

batches = [sb.report_request(f"bench-gateway-{i % args.senders}",
                             [f"u{j}" for j in range(i, min(i + args.batch, args.users))])
           for i in range(0, args.users, args.batch)]

lock = threading.Lock()
accepted = rejected = calls = 0
latencies = []  # seconds, calls completed inside the window
failures = []
window_open = threading.Event()
stop = threading.Event()


def sender(index, status):
    global accepted, rejected, calls
    mine = batches[index::args.senders]
    i = 0
    while not stop.is_set() and mine:
        started = time.perf_counter()
        try:
            response = sb.decode_varints(status.report(mine[i % len(mine)], timeout=10))
        except grpc.RpcError as error:
            with lock:
                failures.append(f"{error.code().name}: {error.details()}")
            time.sleep(0.1)
            continue
        elapsed = time.perf_counter() - started
        with lock:
            accepted += response.get(1, 0)
            rejected += response.get(2, 0)
            calls += 1
            if window_open.is_set():
                latencies.append(elapsed)
        i += 1


with sb.Status(args.bin_dir, args.store, name="status-ingest") as status:
    threads = [threading.Thread(target=sender, args=(i, status), daemon=True)
               for i in range(args.senders)]
    for thread in threads:
        thread.start()
    time.sleep(args.warmup)
    backends = status.store.backends()
    t0 = time.monotonic()
    with lock:
        a0, c0 = accepted, calls
        window_open.set()
    status0 = status.cpu()
    db0 = {pid: sb.cpu_seconds(pid) for pid in backends}
    me0 = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(args.seconds)
    with lock:
        a1, c1 = accepted, calls
        window_open.clear()
    t1 = time.monotonic()
    status1 = status.cpu()
    db1 = {}
    for pid in backends:
        try:
            db1[pid] = sb.cpu_seconds(pid)
        except OSError:
            pass  # a backend that closed inside the window: its CPU is lost, not invented
    me1 = resource.getrusage(resource.RUSAGE_SELF)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    window = t1 - t0
    online = status.fetch()
    stored = int(status.store.sql("SELECT count(*) FROM presence"))
    result = {
        "store": args.store, "users": args.users, "batch": args.batch,
        "senders": args.senders, "window_s": round(window, 2),
        "updates_per_s": round((a1 - a0) / window),
        "calls_per_s": round((c1 - c0) / window, 1),
        "call_ms_p50": round(sb.pct(latencies, 0.5) * 1000, 1) if latencies else None,
        "call_ms_p99": round(sb.pct(latencies, 0.99) * 1000, 1) if latencies else None,
        "status_cpu_cores": round((status1 - status0) / window, 2),
        "db_backends": len(db1),
        "db_cpu_cores": round(sum(db1[p] - db0[p] for p in db1) / window, 2)
        if args.store == "postgres" else None,
        "generator_cpu_cores": round((me1.ru_utime + me1.ru_stime
                                      - me0.ru_utime - me0.ru_stime) / window, 2),
        "load_average": sb.load_average(),
        "accepted_total": accepted, "rejected_total": rejected,
        "online_fetched": online, "rows_stored": stored,
        "failed_calls": len(failures), "failures": sorted(set(failures))[:5],
    }
    print(json.dumps(result), flush=True)
    ok = (rejected == 0 and online == args.users and stored == args.users
          and accepted >= args.users)
    if not ok:
        print("FAILED: every user must be stored and counted exactly, nothing rejected",
              file=sys.stderr)
        sys.exit(1)
