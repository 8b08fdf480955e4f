#!/usr/bin/env python3
"""The machine's ceiling for one TLS stream over loopback: no HTTP/2, no gRPC, no framing.

usage: Benchmarks/tls-loopback.py CERT_DIR [MIB=256] [RUNS=3]

CERT_DIR is what `jobctl certs init --dir CERT_DIR` writes (server.pem, server-key.pem). A
forked server sends MIB MiB as 255 KiB writes (the job worker's message size) over TLS 1.3
with the server's certificate (OpenSSL through Python's ssl module, whose loops are in C); the
client reads into a 1 MiB buffer. Prints, per run, the protocol and cipher, MB/s, and the CPU
of each side (user and system). Loopback only, bounded by a 60 s socket timeout.
"""
import os
import socket
import ssl
import sys
import time


def run(pki: str, total: int) -> str:
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.minimum_version = ssl.TLSVersion.TLSv1_3
    server_context.load_cert_chain(f"{pki}/server.pem", f"{pki}/server-key.pem")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    child = os.fork()
    if child == 0:
        try:
            connection, _ = listener.accept()
            connection.settimeout(60)
            stream = server_context.wrap_socket(connection, server_side=True)
            message = b"x" * (255 * 1024)
            sent = 0
            while sent < total:
                stream.sendall(message)
                sent += len(message)
            stream.close()
        finally:
            os._exit(0)
    listener.close()
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.minimum_version = ssl.TLSVersion.TLSv1_3
    client_context.load_verify_locations(f"{pki}/ca.pem")
    client_context.check_hostname = False
    stream = client_context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=60))
    buffer = bytearray(1 << 20)
    received = 0
    before = os.times()
    start = time.perf_counter()
    while received < total:
        n = stream.recv_into(buffer)
        if n == 0:
            break
        received += n
    elapsed = time.perf_counter() - start
    os.waitpid(child, 0)
    after = os.times()
    return (
        f"{stream.version()} {stream.cipher()[0]}: {received} bytes in {elapsed:.3f} s, "
        f"{received / elapsed / 1e6:.0f} MB/s; client user {after.user - before.user:.2f} s "
        f"sys {after.system - before.system:.2f} s; server user "
        f"{after.children_user - before.children_user:.2f} s "
        f"sys {after.children_system - before.children_system:.2f} s"
    )


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    pki = sys.argv[1]
    total = int(sys.argv[2] if len(sys.argv) > 2 else 256) << 20
    runs = int(sys.argv[3] if len(sys.argv) > 3 else 3)
    for _ in range(runs):
        print("tls-loopback " + run(pki, total), flush=True)


if __name__ == "__main__":
    main()
