"""What the status-side benchmark scripts share (status-ingest.py, status-fetch.py,
status-freshness.py): a private `status` on loopback over a private store (a SQLite file in a
temporary directory, or its own schema of the PostgreSQL database POSTGRES_URL names, dropped
at the end), raw gRPC calls with hand-encoded messages (only `grpcio` is needed: no generated
code), CPU time from /proc, the status service's PostgreSQL backends included, and
percentiles."""
import contextlib, os, re, shutil, signal, socket, sqlite3, struct, subprocess, sys, tempfile, time
import urllib.parse

import grpc

from jobbench import free_port, pct, stop  # noqa: F401 (re-exported to the scripts)

REPORT = "/tenten.interview.PresenceIngest/ReportPresence"
FETCH = "/tenten.interview.StatusReader/FetchOnlineUsersInLast3Mins"
HZ = os.sysconf("SC_CLK_TCK")


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(tag, payload):
    return bytes([tag]) + varint(len(payload)) + payload


def report_request(gateway_id, user_ids, seen_ago_ms=0):
    """ReportPresenceRequest{gateway_id, records[{user_id, seen_ago_ms}]}: seen_ago_ms is
    always encoded (proto3 `optional`, so 0 is present): status stores its own now − age, and
    a batch sent again later is a real update. last_seen_unix_ms is left 0 (no skew gauge)."""
    records = b"".join(
        field(0x12, field(0x0A, uid.encode()) + b"\x18" + varint(seen_ago_ms))
        for uid in user_ids)
    return field(0x0A, gateway_id.encode()) + records


def decode_varints(message):
    """Top-level varint fields of a message: {field number: value} (enough for both
    responses used here)."""
    values, i = {}, 0
    while i < len(message):
        key, i = _read_varint(message, i)
        value, i = _read_varint(message, i)
        values[key >> 3] = value
    return values


def _read_varint(data, i):
    n, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return n, i
        shift += 7


def raw(channel, method):
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def channel(port, options=()):
    return grpc.insecure_channel(
        f"127.0.0.1:{port}",
        options=[("grpc.max_send_message_length", 8 << 20), *options])


def fetch(stub, timeout=10):
    return decode_varints(stub(b"", timeout=timeout)).get(1, 0)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ  # utime + stime


class Store:
    """`sqlite` (a file in a temporary directory) or `postgres` (schema `bench_<pid>` of
    POSTGRES_URL's database, default postgres://postgres:postgres@127.0.0.1:5432/tenten)."""

    def __init__(self, kind, work):
        self.kind = kind
        if kind == "sqlite":
            self.path = f"{work}/status.sqlite"
            self.url = f"sqlite:{self.path}"
        elif kind == "postgres":
            base = os.environ.get(
                "POSTGRES_URL", "postgres://postgres:postgres@127.0.0.1:5432/tenten")
            parts = urllib.parse.urlsplit(base)
            self.dsn = urllib.parse.urlunsplit(parts._replace(query=""))
            self.database = parts.path.lstrip("/")
            self.schema = f"bench_{os.getpid()}"
            query = urllib.parse.parse_qsl(parts.query) + [("schema", self.schema)]
            self.url = urllib.parse.urlunsplit(
                parts._replace(query=urllib.parse.urlencode(query)))
        else:
            raise SystemExit(f"store must be sqlite or postgres, not {kind}")

    def sql(self, *statements):
        """Runs SQL statements on the store directly, in one session (psql, or Python's
        sqlite3 module: no sqlite3 shell needed); returns the last one's rows as text."""
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.path, isolation_level=None)) as db:
                db.execute("PRAGMA busy_timeout = 10000")
                for statement in statements:
                    rows = db.execute(statement).fetchall()
            return "\n".join("|".join(str(v) for v in row) for row in rows)
        command = ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", self.dsn,
                   "-c", f"SET search_path TO {self.schema}"]
        for statement in statements:
            command += ["-c", statement]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise SystemExit(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def seed(self, users, last_seen_ms):
        """`users` rows u0…u(N−1), all last seen at `last_seen_ms`, in one transaction."""
        if self.kind == "sqlite":
            self.sql(
                "BEGIN", "WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g "
                f"WHERE i + 1 < {users}) INSERT INTO presence SELECT 'u' || i, "
                f"{last_seen_ms} FROM g", "COMMIT", "ANALYZE")
        else:
            self.sql(f"INSERT INTO presence SELECT 'u' || g, {last_seen_ms} FROM "
                     f"generate_series(0, {users - 1}) g", "VACUUM ANALYZE presence")

    def time_count(self, since):
        """The count query status runs, timed in the store itself (PostgreSQL: EXPLAIN
        ANALYZE's execution time; SQLite: around the call, in this process), in ms, and its
        plan."""
        query = f"SELECT count(*) FROM presence WHERE last_seen_ms >= {since}"
        if self.kind == "postgres":
            plan = self.sql(f"EXPLAIN (ANALYZE, BUFFERS) {query}")
            return float(re.search(r"Execution Time: ([0-9.]+) ms", plan).group(1)), plan
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            started = time.perf_counter()
            db.execute(query).fetchall()
            elapsed = (time.perf_counter() - started) * 1000
            plan = "\n".join(row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {query}"))
        return elapsed, plan

    def backends(self):
        """PIDs of the status service's PostgreSQL backends (none for SQLite): those of
        application `tenten-status` on this database, so give the benchmark a database of its
        own (other status services, tests', connect the same way)."""
        if self.kind != "postgres":
            return []
        out = self.sql("SELECT pid FROM pg_stat_activity WHERE application_name = "
                       f"'tenten-status' AND datname = '{self.database}'")
        return [int(p) for p in out.split()]

    def drop(self):
        if self.kind == "postgres":
            try:
                subprocess.run(
                    ["psql", "-X", "-q", self.dsn, "-c", f"DROP SCHEMA IF EXISTS {self.schema} "
                     "CASCADE"], capture_output=True, timeout=120)
            except (OSError, subprocess.SubprocessError):
                pass


class Status:
    """A `status` from BIN_DIR on a free loopback port over `store`; `count_cache` is its
    --count-cache (0: every fetch queries the store). Use in `with`: it is stopped (SIGTERM,
    then SIGKILL after 30 s) and its work directory and PostgreSQL schema removed at the end.
    SIGTERM to the benchmark exits through that cleanup."""

    def __init__(self, bin_dir, store_kind, count_cache=1.0, name="status-bench"):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
        self.work = tempfile.mkdtemp(prefix=f"{name}.")
        self.store = Store(store_kind, self.work)
        self.port = free_port()
        self.log = f"{self.work}/status.log"
        self.process = subprocess.Popen(
            [f"{bin_dir}/status", "--listen", f"127.0.0.1:{self.port}",
             "--metrics-listen", f"127.0.0.1:{free_port()}", "--store", self.store.url,
             "--count-cache", str(count_cache), "--log-level", "warning"],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        self.channel = channel(self.port)
        self.report = raw(self.channel, REPORT)
        self.fetch_stub = raw(self.channel, FETCH)
        deadline = time.monotonic() + 60
        while True:  # serving, and the store's schema is there (PostgreSQL migrates lazily)
            if self.process.poll() is not None:
                raise SystemExit(f"status exited: {open(self.log).read()[-2000:]}")
            try:
                self.fetch()
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"status did not serve within 60 s: {self.log}")
                time.sleep(0.1)

    def fetch(self, timeout=10):
        return fetch(self.fetch_stub, timeout)

    def cpu(self):
        return cpu_seconds(self.process.pid)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.channel.close()
        stop(self.process, timeout=30)
        self.store.drop()
        shutil.rmtree(self.work, ignore_errors=True)


def report_at_rate(port, users, rate, done, written, ready=None):
    """Re-reports users u0… (at most 200,000 of them) in batches of ≤ 5,000 at `rate` records a
    second until `done` is set; adds what status accepted to `written` (for a process of its
    own: multiprocessing objects). Sets `ready` once its first batch was accepted (the
    batches are encoded by then: its start-up is not part of the measured window)."""
    with channel(port) as connection:
        report = raw(connection, REPORT)
        size = min(5000, users)
        batches = [report_request("fetch-bench", [f"u{j}" for j in range(i, i + size)])
                   for i in range(0, min(users, 200_000) - size + 1, size)]
        period, i, next_at = size / rate, 0, time.monotonic()
        while not done.is_set():
            response = decode_varints(report(batches[i % len(batches)], timeout=10))
            with written.get_lock():
                written.value += response.get(1, 0)
            if ready is not None:
                ready.set()
            i += 1
            next_at += period
            done.wait(max(0, next_at - time.monotonic()))


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class LoopbackCapture:
    """`tcpdump` of the TCP connections to `port` on loopback (needs tcpdump and the right to
    capture, e.g. root), for `server_side_ms`. Use in `with`; start the connections to be
    measured after entering, so that their HTTP/2 streams are seen from the preface on."""

    def __init__(self, port, path):
        self.path = path
        self.process = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-n", "-U", "--immediate-mode", "-B", "16384", "-s", "65535",
             "--time-stamp-precision=nano", "-w", path, f"tcp port {port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.process.stderr.readline()  # "listening on lo, …" once capturing
        if "listening" not in line:
            raise SystemExit(f"tcpdump did not start: {line}")
        self.port = port

    def __enter__(self):
        return self

    def __exit__(self, *_):
        time.sleep(1)  # what the kernel still holds for it
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=30)

    def server_side_ms(self):
        """For the first connection opened after the capture started (the reader's): per
        call, from the kernel's timestamp of the client's request HEADERS frame to that of
        status's END_STREAM (the trailers), in ms, in call order. What the client waits on
        top of it is client-side: its own scheduling, grpcio's threads, Python."""
        streams = {}  # (client port) -> [bytes to server, bytes to client]
        order = []
        with open(self.path, "rb") as f:
            header = f.read(24)
            magic, = struct.unpack("<I", header[:4])
            endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
            nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
            link = struct.unpack(endian + "I", header[20:24])[0] & 0xFFFF
            skip = {1: 14, 113: 16, 276: 20, 0: 4}.get(link)
            if skip is None:
                raise SystemExit(f"unknown pcap link type {link}")
            while True:
                record = f.read(16)
                if len(record) < 16:
                    break
                sec, frac, incl, _ = struct.unpack(endian + "IIII", record)
                data = f.read(incl)
                ip = data[skip:]
                if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
                    continue
                tcp = ip[(ip[0] & 0xF) * 4:]
                sport, dport = struct.unpack(">HH", tcp[:4])
                payload = tcp[(tcp[12] >> 4) * 4:]
                if not payload:
                    continue
                t = sec + frac / (1e9 if nano else 1e6)
                to_server = dport == self.port
                client = sport if to_server else dport
                if client not in streams:
                    if not (to_server and payload.startswith(b"PRI * HTTP/2.0")):
                        continue  # a connection that began before the capture
                    streams[client] = ([], [])
                    order.append(client)
                streams[client][0 if to_server else 1].append((t, payload))
        if not order:
            return []
        requests, responses = streams[order[0]]
        starts = {s: t for t, kind, _, s in _frames(requests, preface=True) if kind == 1}
        ends = {s: t for t, kind, flags, s in _frames(responses) if kind == 1 and flags & 1}
        return [(ends[s] - starts[s]) * 1000 for s in sorted(starts) if s in ends]


def _frames(segments, preface=False):
    """HTTP/2 frames of one direction of a connection: (timestamp of the segment holding the
    frame's last byte, type, flags, stream id)."""
    buffer, frames = b"", []
    for t, payload in segments:
        buffer += payload
        if preface:
            if len(buffer) < 24:
                continue
            buffer, preface = buffer[24:], False
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + length:
                break
            frames.append((t, buffer[3], buffer[4], int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF))
            buffer = buffer[9 + length:]
    return frames
