#!/usr/bin/env python3
"""Many gateway streams on ONE grpcio (C-core) channel, to check that the gateway serves a
non-Swift client that multiplexes: C-core probes the flow-control window with HTTP/2 PINGs
(BDP estimation, on by default) as messages arrive.

Opens STREAMS `tenten.interview.Gateway/Connect` streams, each with its own `client-id`,
answers every Ping with a Pong (EVEN/ODD by the parity of the time in milliseconds), and
after SECONDS half-closes them all. Prints one JSON line:
  {"streams": N, "seconds": S, "ended_by_server": K, "errors": {"CODE: details": count},
   "pings_min": a, "pings_max": b, "pings_total": t, "wall_s": w}
and exits 0 only when no stream was ended by the server and every stream got a ping.

Needs only `grpcio` (no generated code: the two messages are encoded by hand).
usage: grpcio_streams.py HOST:PORT [--streams N] [--seconds S] [--id-prefix P]
"""
import argparse
import json
import queue
import sys
import threading
import time

import grpc

METHOD = "/tenten.interview.Gateway/Connect"
# Pong{status: STATUS_EVEN (1) / STATUS_ODD (2)}: field 1, varint.
PONG_EVEN = b"\x08\x01"
PONG_ODD = b"\x08\x02"
_END = object()


def pong_now():
    return PONG_EVEN if time.time_ns() // 1_000_000 % 2 == 0 else PONG_ODD


class Stream:
    """One Connect stream: a request iterator fed by the response loop."""

    def __init__(self, connect, client_id, stop):
        self.client_id = client_id
        self.stop = stop
        self.outbox = queue.Queue()
        self.pings = 0
        self.error = None  # "CODE: details" when the server ended the stream
        self.call = connect(self.requests(), metadata=(("client-id", client_id),))
        self.thread = threading.Thread(target=self.receive, daemon=True)
        self.thread.start()

    def requests(self):
        while True:
            item = self.outbox.get()
            if item is _END:
                return
            yield item

    def receive(self):
        try:
            for _ in self.call:
                self.pings += 1
                self.outbox.put(pong_now())
            # The server ended the stream with OK before we half-closed.
            if not self.stop.is_set():
                self.error = "OK: ended by the server before the client half-closed"
        except grpc.RpcError as error:
            code = error.code()
            if not (self.stop.is_set() and code == grpc.StatusCode.CANCELLED):
                self.error = f"{code.name}: {error.details()}"
        finally:
            self.outbox.put(_END)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="gateway HOST:PORT (plaintext)")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--id-prefix", default="grpcio")
    parser.add_argument(
        "--ping-interval-ms", type=int, default=0,
        help="also send an HTTP/2 PING every N ms (C-core keepalive, waiting for each ack as "
        "BDP probing does); 0: only C-core's own BDP pings")
    args = parser.parse_args()

    start = time.monotonic()
    # Default channel options: BDP probing on, as every grpcio user gets it. One subchannel,
    # so all streams share one HTTP/2 connection.
    options = []
    if args.ping_interval_ms > 0:
        options = [
            ("grpc.keepalive_time_ms", args.ping_interval_ms),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
    with grpc.insecure_channel(args.target, options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        connect = channel.stream_stream(
            METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        stop = threading.Event()
        streams = [
            Stream(connect, f"{args.id_prefix}-{i}", stop) for i in range(args.streams)
        ]
        deadline = start + args.seconds
        while time.monotonic() < deadline and all(s.error is None for s in streams):
            time.sleep(0.1)
        # Keep going to the end even after a failure, so that the report counts every stream
        # the server ended, not just the first.
        while time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        for s in streams:
            s.outbox.put(_END)
        for s in streams:
            s.thread.join(timeout=10)
            if s.thread.is_alive():
                s.call.cancel()

    errors = {}
    for s in streams:
        if s.error is not None:
            errors[s.error] = errors.get(s.error, 0) + 1
    pings = [s.pings for s in streams]
    report = {
        "streams": len(streams),
        "seconds": args.seconds,
        "ended_by_server": sum(1 for s in streams if s.error is not None),
        "errors": errors,
        "pings_min": min(pings),
        "pings_max": max(pings),
        "pings_total": sum(pings),
        "wall_s": round(time.monotonic() - start, 1),
    }
    print(json.dumps(report), flush=True)
    return 0 if report["ended_by_server"] == 0 and report["pings_min"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
