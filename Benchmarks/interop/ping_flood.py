#!/usr/bin/env python3
"""HTTP/2 PINGs on a raw connection, to check the bound the gateway keeps on pings.

Speaks just enough HTTP/2 (preface, an empty SETTINGS, PINGs; no gRPC call) to a plaintext
server and prints one JSON line:
  {"mode": ..., "sent": N, "acks": A, "goaway_error": CODE or null, "goaway_debug": TEXT,
   "closed_by_server": BOOL, "seconds": S}
(closed_by_server: the server sent GOAWAY or closed the connection; a reset can lose the
GOAWAY, so goaway_error may then be null.)
--flood: sends COUNT pings back to back without waiting for acks (an attacker).
--wait-for-acks: sends one ping, waits for its ack, repeats for SECONDS (what a BDP
  estimator or keepalive does, flat out).
ENHANCE_YOUR_CALM is error code 11. Standard library only.
usage: ping_flood.py HOST:PORT (--flood COUNT | --wait-for-acks SECONDS)
"""
import argparse
import json
import socket
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PING, SETTINGS, GOAWAY = 0x6, 0x4, 0x7


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(
        ">I", stream) + payload


class Reader:
    def __init__(self, sock):
        self.sock, self.buffer = sock, b""

    def frame(self):
        """The next frame as (type, flags, payload), or None at EOF."""
        while True:
            if len(self.buffer) >= 9:
                length = int.from_bytes(self.buffer[:3], "big")
                if len(self.buffer) >= 9 + length:
                    kind, flags = self.buffer[3], self.buffer[4]
                    payload = self.buffer[9:9 + length]
                    self.buffer = self.buffer[9 + length:]
                    return kind, flags, payload
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--flood", type=int, metavar="COUNT")
    mode.add_argument("--wait-for-acks", type=float, metavar="SECONDS")
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=15)
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
    reader = Reader(sock)
    start = time.monotonic()
    sent = acks = 0
    f = None
    goaway = None
    goaway_debug = ""

    def handle(f):
        nonlocal acks, goaway, goaway_debug
        kind, flags, payload = f
        if kind == PING and flags & 1:
            acks += 1
        elif kind == SETTINGS and not flags & 1:
            sock.sendall(frame(SETTINGS, 1, 0, b""))
        elif kind == GOAWAY:
            goaway = int.from_bytes(payload[4:8], "big")
            goaway_debug = payload[8:].decode("utf-8", "replace")

    try:
        if args.flood is not None:
            sock.sendall(b"".join(
                frame(PING, 0, 0, struct.pack(">Q", i)) for i in range(args.flood)))
            sent = args.flood
            while goaway is None and acks < sent:
                f = reader.frame()
                if f is None:
                    break
                handle(f)
        else:
            while goaway is None and time.monotonic() - start < args.wait_for_acks:
                sock.sendall(frame(PING, 0, 0, struct.pack(">Q", sent)))
                sent += 1
                before = acks
                while goaway is None and acks == before:
                    f = reader.frame()
                    if f is None:
                        break
                    handle(f)
                if f is None:
                    break
        closed = goaway is not None or f is None
    except socket.timeout:
        closed = False  # the server neither answered nor closed
    except OSError:
        closed = True  # reset after a GOAWAY: what was read so far is the answer
    print(json.dumps({
        "mode": "flood" if args.flood is not None else "wait-for-acks",
        "sent": sent, "acks": acks, "goaway_error": goaway,
        "goaway_debug": goaway_debug,
        "closed_by_server": closed,
        "seconds": round(time.monotonic() - start, 2),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
