#!/usr/bin/env python3
"""Freshness (issue 12): how long after its first pong a new client is counted.

Starts a private `status` (statusbench.Status, SQLite store, `--count-cache CACHE`: 1 s, the
default, is what production serves) and a `gateway` reporting to it, both from BIN_DIR. Then
CLIENTS times, one after another, after a random pause of 0–1 s (so that clients arrive at
every phase of the gateway's once-a-second flush and of the count cache): opens one more
`Gateway/Connect` stream (grpcio, hand-encoded messages) with a new client id, answers its
pings, notes when it sent the first EVEN/ODD pong, and polls `FetchOnlineUsersInLast3Mins`
every POLL_MS until the count includes it (earlier clients stay connected and counted).
Reports the delay's p50/p90/p99/max. Exits 1 when a client is never counted within 10 s or a
stream ends (no timing is checked).

usage: status-freshness.py BIN_DIR [--clients N] [--cache S] [--poll-ms P]
CI's short form: status-freshness.py .build/debug --clients 3
"""
import argparse, json, os, queue, random, subprocess, sys, threading, time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import statusbench as sb

CONNECT = "/tenten.interview.Gateway/Connect"
_END = object()

parser = argparse.ArgumentParser()
parser.add_argument("bin_dir")
parser.add_argument("--clients", type=int, default=60)
parser.add_argument("--cache", type=float, default=1.0)
parser.add_argument("--poll-ms", type=float, default=10)
args = parser.parse_args()


class Client:
    """One Connect stream answering every ping at once; `first_pong` is when the first
    answer was handed to grpcio (monotonic), `error` how the server ended it, if it did."""

    def __init__(self, connect, client_id):
        self.outbox = queue.Queue()
        self.first_pong = None
        self.pong_sent = threading.Event()
        self.error = None
        self.call = connect(self.requests(), metadata=(("client-id", client_id),))
        threading.Thread(target=self.receive, daemon=True).start()

    def requests(self):
        while (item := self.outbox.get()) is not _END:
            yield item

    def receive(self):
        try:
            for _ in self.call:
                pong = b"\x08\x01" if time.time_ns() // 1_000_000 % 2 == 0 else b"\x08\x02"
                if self.first_pong is None:
                    self.first_pong = time.monotonic()
                    self.pong_sent.set()
                self.outbox.put(pong)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.error = f"{error.code().name}: {error.details()}"
        finally:
            self.outbox.put(_END)


with sb.Status(args.bin_dir, "sqlite", count_cache=args.cache, name="status-freshness") as status:
    port = sb.free_port()
    gateway = subprocess.Popen(
        [f"{args.bin_dir}/gateway", "--listen", f"127.0.0.1:{port}",
         "--metrics-listen", f"127.0.0.1:{sb.free_port()}", "--status",
         f"127.0.0.1:{status.port}", "--gateway-id", "freshness", "--log-level", "warning"],
        stdout=open(f"{status.work}/gateway.log", "w"), stderr=subprocess.STDOUT)
    clients, delays, missing = [], [], 0
    try:
        with sb.channel(port) as gateway_channel:
            grpc.channel_ready_future(gateway_channel).result(timeout=60)
            connect = gateway_channel.stream_stream(
                CONNECT, request_serializer=None, response_deserializer=None)
            for i in range(args.clients):
                time.sleep(random.uniform(0, 1))
                client = Client(connect, f"fresh-{os.getpid()}-{i}")
                clients.append(client)
                if not client.pong_sent.wait(10):
                    missing += 1
                    continue
                deadline = client.first_pong + 10
                while time.monotonic() < deadline:
                    if status.fetch() >= i + 1:
                        delays.append(time.monotonic() - client.first_pong)
                        break
                    time.sleep(args.poll_ms / 1000)
                else:
                    missing += 1
            ended = [c.error for c in clients if c.error]
            for client in clients:
                client.call.cancel()
    finally:
        sb.stop(gateway, timeout=30)
    ms = lambda s: round(s * 1000)
    result = {
        "clients": args.clients, "cache_s": args.cache, "poll_ms": args.poll_ms,
        "counted": len(delays), "missing": missing, "streams_ended": len(ended),
        "p50_ms": ms(sb.pct(delays, 0.5)) if delays else None,
        "p90_ms": ms(sb.pct(delays, 0.9)) if delays else None,
        "p99_ms": ms(sb.pct(delays, 0.99)) if delays else None,
        "max_ms": ms(max(delays)) if delays else None,
        "load_average": sb.load_average(),
    }
    print(json.dumps(result), flush=True)
    if missing or ended:
        print(f"FAILED: {missing} clients never counted within 10 s; streams ended: "
              f"{sorted(set(ended))[:3]}", file=sys.stderr)
        sys.exit(1)
