#!/usr/bin/env python3
"""A hostile HTTP/2 peer against the gateway: floods of small frames cut so that every read
the server makes ends inside a frame header, while the gateway's anonymous memory is watched.

usage: Benchmarks/h2-split-flood.py GATEWAY_BIN [MIB=8] [DEADLINE_S=60]

Why: swift-nio-http2's frame decoder appends each read to one buffer and hands DATA payloads
on as slices of it. When a read ends inside a frame header and a slice is still held, the next
append copies the whole buffer into one of twice the capacity, and capacities never shrink
(docs/benchmarks.md, "The client's receive path"). `jobctl` had exactly that with a blocked
standard output, and has `HTTP2FrameAligner` since. This checks that an unauthenticated peer
cannot do the same to the gateway, whose streams are read as frames arrive.

It starts GATEWAY_BIN on free loopback ports (plaintext, with a status address nobody answers
at: presence reports fail and are retried, clients are served), and sends, for each pattern,
MIB MiB in writes of 997-1000 bytes with TCP_NODELAY, so that every write ends inside a frame:
  - control: WINDOW_UPDATE frames on the connection (13 bytes each), no stream;
  - stream: a `Connect` stream whose messages arrive one 1-byte DATA frame at a time (5 zero
    bytes make one empty Pong).
Prints each pattern's bytes sent, seconds and the gateway's RssAnon growth, and exits 1 when a
pattern grew the gateway by more than an eighth of what it sent plus 4 MiB (a decoder that
kept what it received would grow by at least what was sent), or when the gateway neither took
MIB MiB nor closed the connection before the deadline. Loopback only; the gateway is stopped
at the end.
"""
import socket
import struct
import subprocess
import sys
import time

from jobbench import free_port, stop


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name: bytes, value: bytes) -> bytes:
    # HPACK literal header field without indexing, new name (RFC 7541 6.2.2)
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def rss_anon_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise RuntimeError("no RssAnon")


def flood(port: int, pattern: str, total: int, deadline: float) -> tuple[int, float, bool]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b""))
    if pattern == "control":
        unit, write = frame(8, 0, 0, struct.pack(">I", 1)), 1000
    else:
        block = b"".join(
            literal(n, v)
            for n, v in [
                (b":method", b"POST"), (b":scheme", b"http"),
                (b":path", b"/tenten.interview.Gateway/Connect"), (b":authority", b"gateway"),
                (b"content-type", b"application/grpc"), (b"te", b"trailers"),
                (b"client-id", b"split-flood"),
            ]
        )
        sock.sendall(frame(1, 4, 1, block))
        unit, write = frame(0, 0, 1, b"\x00"), 997
    period = len(unit) * 10000  # a whole number of frames: wrapping keeps the stream aligned
    blob = unit * 20000
    sent, start, closed = 0, time.monotonic(), False
    try:
        while sent < total and time.monotonic() < deadline:
            offset = sent % period
            sock.sendall(blob[offset:offset + write])
            sent += write
    except TimeoutError:
        # Not a close: the gateway stopped reading, which leaves the check without a conclusion.
        print(f"  {pattern}: the gateway stopped reading after {sent} bytes (10 s without progress)")
    except OSError as error:
        print(f"  {pattern}: the gateway closed the connection after {sent} bytes ({error})")
        closed = True
    elapsed = time.monotonic() - start
    time.sleep(0.5)  # let the gateway read what is in flight before memory is sampled
    sock.close()
    return sent, elapsed, closed


def main() -> int:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    total = int(sys.argv[2] if len(sys.argv) > 2 else 8) << 20
    deadline_s = float(sys.argv[3] if len(sys.argv) > 3 else 60)
    port, metrics = free_port(), free_port()
    gateway = subprocess.Popen(
        [binary, "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics}",
         "--status", "127.0.0.1:1", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    failed = False
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        deadline = time.monotonic() + deadline_s
        for pattern in ("control", "stream"):
            before = rss_anon_kib(gateway.pid)
            sent, elapsed, closed = flood(port, pattern, total, deadline)
            grown = rss_anon_kib(gateway.pid) - before
            bound = 4096 + sent // 1024 // 8
            # Closing such a peer is a fine defence; a gateway that neither read it all nor
            # closed before the deadline leaves the check without a conclusion.
            verdict = "ok" if grown <= bound and (sent >= total or closed) else "FAILED"
            failed |= verdict != "ok"
            print(f"split-flood {pattern}: sent {sent >> 10} KiB in {elapsed:.1f} s, gateway RssAnon "
                  f"{before} -> {before + grown} KiB (grew {grown} KiB, bound {bound}): {verdict}",
                  flush=True)
        if gateway.poll() is not None:
            print(f"the gateway exited ({gateway.returncode})")
            failed = True
    finally:
        stop(gateway, timeout=20)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
