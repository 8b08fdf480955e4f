#!/usr/bin/env python3
"""`FetchOnlineUsersInLast3Mins` with many users online (issue 12).

Starts a private `status` (statusbench.Status) on STORE (sqlite or postgres) with
`--count-cache CACHE` (0: every call queries the store), seeds USERS users straight into its
store in one statement (all seen now, so all online for the next 180 s), then:
  1. times the count query in the store itself, RUNS times (PostgreSQL: EXPLAIN ANALYZE's
     execution time, and its plan; SQLite: the call through Python's sqlite3 module): the
     uncached cost, without gRPC;
  2. times CALLS `FetchOnlineUsersInLast3Mins` calls through gRPC, each reader pausing
     INTERVAL s between its calls (0: back to back; a dashboard polling every 100 ms is
     --interval 0.1), and reports p50/p90/p99/max and the CPU that status, the reader and the
     writer (below) took meanwhile. The reader (--reader): `go`, the default, is
     Benchmarks/interop/bin/fetchprobe (grpc-go, one goroutine, one connection; built by
     interop/build-go.sh when missing): light, so that on a small shared host its own
     wake-ups weigh little in the tail; `python` is grpcio from CONCURRENCY threads of this
     process (the reader of the earlier rows in docs/benchmarks.md).
With --server-side PCAP (needs tcpdump and root), the calls run on a connection captured on
loopback, and the output adds their server-side time (the client's request HEADERS to
status's trailers, kernel timestamps): what is left of a call's latency is client-side.
With --writes-per-s W, a thread meanwhile re-reports seeded users through `ReportPresence`
in batches of 5 000 at W records a second, as gateways do all the time (the count does not
change: they are online already); the calls start once its first batch was accepted, so its
start-up (a Python interpreter encoding 200,000 records) is not in the measured window.
Every answer must equal USERS (exits 1 otherwise; no timing is checked). Prints one JSON line.
The whole run must fit in the 180 s window after seeding (it stops calling at 150 s).

usage: status-fetch.py BIN_DIR STORE [--users N] [--cache S] [--calls C] [--concurrency K]
       [--interval I] [--runs R] [--writes-per-s W] [--server-side PCAP] [--reader go|python]
CI's short form: status-fetch.py .build/debug sqlite --users 10000 --calls 50 --runs 1
"""
import argparse, contextlib, json, multiprocessing, os, resource, subprocess, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import statusbench as sb


HERE = os.path.dirname(os.path.abspath(__file__))
FETCHPROBE = os.path.join(HERE, "interop", "bin", "fetchprobe")


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
    parser.add_argument("--server-side", metavar="PCAP")
    parser.add_argument("--reader", choices=["go", "python"], default="go")
    args = parser.parse_args()
    if args.reader == "go":
        if args.concurrency != 1:
            parser.error("--reader go is one reader: --concurrency 1 (or --reader python)")
        if not os.access(FETCHPROBE, os.X_OK):
            subprocess.run([os.path.join(HERE, "interop", "build-go.sh")], check=True,
                           stdout=subprocess.DEVNULL)

    with sb.Status(args.bin_dir, args.store, count_cache=args.cache, name="status-fetch") as status:
        seeded_at = time.time()
        started = time.monotonic()
        status.store.seed(args.users, int(seeded_at * 1000))
        seed_s = time.monotonic() - started
        since = int(seeded_at * 1000) - 1
        direct, plan = direct_query_ms(status.store, since, args.runs)
        time.sleep(args.cache + 0.1)  # a count cached before the seeding has expired
        capture = (sb.LoopbackCapture(status.port, args.server_side) if args.server_side
                   else contextlib.nullcontext())
        with capture:
            result = measure(args, status, started, direct, plan, seed_s)
        if args.server_side:
            # The last ones: the first was the untimed call.
            server = capture.server_side_ms()[-len(result["latencies"]):]
            ms = lambda v: round(v, 2)
            result |= {"server_side_calls": len(server),
                       "server_p50_ms": ms(sb.pct(server, 0.5)), "server_p90_ms": ms(sb.pct(server, 0.9)),
                       "server_p99_ms": ms(sb.pct(server, 0.99)), "server_max_ms": ms(max(server))}
            if len(server) == len(result["latencies"]) and args.concurrency == 1:
                # The slowest 1% of calls: how much of them status took.
                slow = sorted(zip(result["latencies"], server), reverse=True)[:max(1, len(server) // 100)]
                result["slowest_1pct_server_share"] = round(
                    sum(s for _, s in slow) / sum(c * 1000 for c, _ in slow), 2)
        del result["latencies"]
        print(json.dumps(result), flush=True)
        if result.pop("failed"):
            sys.exit(1)


def measure(args, status, started, direct, plan, seed_s):
    """The timed calls (and the writer, if any); the result, with `failed` set when a count
    was wrong, the writer failed or under half the calls ran."""
    lock = threading.Lock()
    latencies, wrong = [], []
    per_thread = max(1, args.calls // args.concurrency)
    deadline = started + 150
    # The reader's own connection (not shared with `status`'s channel), opened now: with
    # --server-side, the capture sees it from the start, before the writer's.
    if args.reader == "go":
        probe = subprocess.Popen(
            [FETCHPROBE, "-target", f"127.0.0.1:{status.port}", "-calls", str(args.calls),
             "-interval", f"{args.interval}s", "-expect", str(args.users), "-wait",
             "-for", f"{max(1, deadline - time.monotonic()):.0f}s"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if probe.stdout.readline().strip() != "ready":
            raise SystemExit("fetchprobe did not get its first answer")
        connection = None
    else:
        connection = sb.channel(status.port, [("grpc.use_local_subchannel_pool", 1)])
        stub = sb.raw(connection, sb.FETCH)
        sb.fetch(stub)  # the first call after the bulk insert (SQLite opens a new snapshot)

    def caller():
        for _ in range(per_thread):
            if time.monotonic() > deadline:
                return
            t0 = time.perf_counter()
            count = sb.fetch(stub)
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)
                if count != args.users:
                    wrong.append(count)
            if args.interval:
                time.sleep(args.interval)

    # The writer is a process of its own, so that it does not hold this one's GIL.
    context = multiprocessing.get_context("spawn")
    done, ready, written = context.Event(), context.Event(), context.Value("q", 0)
    writers = [context.Process(target=sb.report_at_rate, args=(
        status.port, args.users, args.writes_per_s, done, written, ready))] if args.writes_per_s else []
    for process in writers:
        process.start()
    if writers and not ready.wait(120):
        raise SystemExit("the writer did not get a batch accepted within 120 s")
    with written.get_lock():
        written.value = 0  # counted from the first measured call on
    cpu0, t0, own0 = status.cpu(), time.monotonic(), time.process_time()
    writer0 = [sb.cpu_seconds(process.pid) for process in writers]
    if args.reader == "go":
        # The probe is the only child reaped meanwhile: the writer is still running.
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        probe.stdin.write("go\n")
        probe.stdin.flush()
        output = probe.stdout.read()
        if probe.wait() != 0:
            raise SystemExit("fetchprobe failed (see above)")
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = (children.ru_utime + children.ru_stime) - (children0.ru_utime + children0.ru_stime)
        report = json.loads(output)
        latencies = [ms / 1000 for ms in report["latencies_ms"]]
        wrong = [None] * report["wrong_answers"]
    else:
        threads = [threading.Thread(target=caller) for _ in range(args.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        own = time.process_time() - own0
    window = time.monotonic() - t0
    writer = sum(sb.cpu_seconds(p.pid) for p in writers) - sum(writer0)
    done.set()
    if connection:
        connection.close()
    for process in writers:
        process.join()
    cpu = status.cpu() - cpu0
    ms = lambda s: round(s * 1000, 2)
    result = {
        "store": args.store, "users": args.users, "cache_s": args.cache,
        "reader": args.reader, "concurrency": args.concurrency, "interval_s": args.interval,
        "seed_s": round(seed_s, 1),
        "writes_per_s": round(written.value / window) if writers else 0,
        "direct_query_ms": [round(t, 1) for t in direct],
        "calls": len(latencies), "calls_per_s": round(len(latencies) / window, 1),
        "p50_ms": ms(sb.pct(latencies, 0.5)), "p90_ms": ms(sb.pct(latencies, 0.9)),
        "p99_ms": ms(sb.pct(latencies, 0.99)), "max_ms": ms(max(latencies)),
        "status_cpu_cores": round(cpu / window, 2), "reader_cpu_cores": round(own / window, 2),
        "writer_cpu_cores": round(writer / window, 2), "wrong_answers": len(wrong),
        "load_average": sb.load_average(),
        "plan": " | ".join(line.strip() for line in plan.splitlines() if line.strip()),
    }
    result["failed"], result["latencies"] = False, latencies
    if any(process.exitcode != 0 for process in writers):
        print("FAILED: the writer process failed (see above)", file=sys.stderr)
        result["failed"] = True
    if wrong or len(latencies) < args.calls * 0.5:
        print(f"FAILED: {len(wrong)} answers differ from {args.users} (e.g. {wrong[:3]}), "
              f"or under half the calls ran before the window closed", file=sys.stderr)
        result["failed"] = True
    return result


if __name__ == "__main__":
    main()
