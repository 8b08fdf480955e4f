#!/usr/bin/env python3
"""`FetchOnlineUsersInLast3Mins` with many users online (issue 12).

Starts a private `status` (statusbench.Status) on STORE (sqlite or postgres) with
`--count-cache CACHE` (0: every call queries the store), seeds USERS users straight into its
store in one statement (all seen now, so all online for the next 180 s), then:
  1. times the count query in the store itself, RUNS times (PostgreSQL: EXPLAIN ANALYZE's
     execution time, and its plan; SQLite: the call through Python's sqlite3 module): the
     uncached cost, without gRPC;
  2. times CALLS `FetchOnlineUsersInLast3Mins` calls through gRPC from CONCURRENCY threads,
     each pausing INTERVAL s between its calls (0: back to back; a dashboard polling every
     100 ms is --interval 0.1), and reports p50/p90/p99/max and status's CPU meanwhile.
With --writes-per-s W, a thread meanwhile re-reports seeded users through `ReportPresence`
in batches of 5 000 at W records a second, as gateways do all the time (the count does not
change: they are online already).
Every answer must equal USERS (exits 1 otherwise; no timing is checked). Prints one JSON line.
The whole run must fit in the 180 s window after seeding (it stops calling at 150 s).

usage: status-fetch.py BIN_DIR STORE [--users N] [--cache S] [--calls C] [--concurrency K]
       [--interval I] [--runs R] [--writes-per-s W]
CI's short form: status-fetch.py .build/debug sqlite --users 10000 --calls 50 --runs 1
"""
import argparse, json, multiprocessing, os, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import statusbench as sb


def direct_query_ms(store, since, runs):
    """The count query's own time in the store, `runs` times (sorted), and its plan."""
    results = [store.time_count(since) for _ in range(runs)]
    return sorted(t for t, _ in results), results[-1][1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bin_dir")
    parser.add_argument("store", choices=["sqlite", "postgres"])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--cache", type=float, default=1.0)
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--writes-per-s", type=int, default=0)
    args = parser.parse_args()

    with sb.Status(args.bin_dir, args.store, count_cache=args.cache, name="status-fetch") as status:
        seeded_at = time.time()
        started = time.monotonic()
        status.store.seed(args.users, int(seeded_at * 1000))
        seed_s = time.monotonic() - started
        since = int(seeded_at * 1000) - 1
        direct, plan = direct_query_ms(status.store, since, args.runs)
        time.sleep(args.cache + 0.1)  # a count cached before the seeding has expired
        status.fetch()  # the first call after the bulk insert (SQLite opens a new snapshot)
        lock = threading.Lock()
        latencies, wrong = [], []
        per_thread = max(1, args.calls // args.concurrency)
        deadline = started + 150

        def caller():
            for _ in range(per_thread):
                if time.monotonic() > deadline:
                    return
                t0 = time.perf_counter()
                count = status.fetch()
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    if count != args.users:
                        wrong.append(count)
                if args.interval:
                    time.sleep(args.interval)

        # The writer is a process of its own, so that it does not hold this one's GIL.
        context = multiprocessing.get_context("spawn")
        done, written = context.Event(), context.Value("q", 0)
        writers = [context.Process(target=sb.report_at_rate, args=(
            status.port, args.users, args.writes_per_s, done, written))] if args.writes_per_s else []
        for process in writers:
            process.start()
        cpu0, t0 = status.cpu(), time.monotonic()
        threads = [threading.Thread(target=caller) for _ in range(args.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        window = time.monotonic() - t0
        done.set()
        for process in writers:
            process.join()
        cpu = status.cpu() - cpu0
        ms = lambda s: round(s * 1000, 2)
        result = {
            "store": args.store, "users": args.users, "cache_s": args.cache,
            "concurrency": args.concurrency, "interval_s": args.interval,
            "seed_s": round(seed_s, 1),
            "writes_per_s": round(written.value / window) if writers else 0,
            "direct_query_ms": [round(t, 1) for t in direct],
            "calls": len(latencies), "calls_per_s": round(len(latencies) / window, 1),
            "p50_ms": ms(sb.pct(latencies, 0.5)), "p90_ms": ms(sb.pct(latencies, 0.9)),
            "p99_ms": ms(sb.pct(latencies, 0.99)), "max_ms": ms(max(latencies)),
            "status_cpu_cores": round(cpu / window, 2), "wrong_answers": len(wrong),
            "load_average": sb.load_average(),
            "plan": " | ".join(line.strip() for line in plan.splitlines() if line.strip()),
        }
        print(json.dumps(result), flush=True)
        if any(process.exitcode != 0 for process in writers):
            print("FAILED: the writer process failed (see above)", file=sys.stderr)
            sys.exit(1)
        if wrong or len(latencies) < args.calls * 0.5:
            print(f"FAILED: {len(wrong)} answers differ from {args.users} (e.g. {wrong[:3]}), "
                  f"or under half the calls ran before the window closed", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
