#!/usr/bin/env python3
"""Hostile-peer benchmark: opens COUNT TCP connections to HOST:PORT that never send a byte,
then reports how many the server closed at once (refused over a cap), when it closed the
rest, and the server's resident memory (VmRSS of PID) before, at the peak and afterwards.

usage: Benchmarks/silent-connections.py HOST PORT COUNT PID [SETTLE_SECONDS]

Stdlib only. Raises its own RLIMIT_NOFILE soft limit to the hard one; COUNT must fit it.
Gives up waiting after 120 s; then waits SETTLE_SECONDS (default 5) more and reads RSS again.
"""
import resource, select, socket, sys, time

host, port, count, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
settle = float(sys.argv[5]) if len(sys.argv) > 5 else 5.0
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_mb():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return -1


print(f"server RSS before: {rss_mb():.1f} MB")
poller = select.epoll()
opened_at, lifetime, by_fd, peak = {}, {}, {}, rss_mb()


def collect(timeout):
    for fd, _ in poller.poll(timeout):
        # A server may speak first (HTTP/2 SETTINGS): read it; only EOF or a reset is a close.
        try:
            if by_fd[fd].recv(65536):
                continue
        except BlockingIOError:
            continue
        except OSError:
            pass
        lifetime[fd] = time.monotonic() - opened_at[fd]
        poller.unregister(fd)


sockets, start = [], time.monotonic()
for index in range(count):
    s = socket.socket()
    s.connect((host, port))
    s.setblocking(False)
    sockets.append(s)
    opened_at[s.fileno()] = time.monotonic()
    by_fd[s.fileno()] = s
    poller.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP)
    collect(0)
    if index % 100 == 0:
        peak = max(peak, rss_mb())
opened = time.monotonic()
print(f"opened {count} connections in {opened - start:.2f} s")
while len(lifetime) < count and time.monotonic() - opened < 120:
    collect(0.2)
    peak = max(peak, rss_mb())

times = sorted(lifetime.values())
early = sum(1 for t in times if t < 1.0)
print(f"server RSS peak: {peak:.1f} MB")
print(f"closed by the server: {len(times)} of {count}; within 1 s of opening: {early}")
if len(times) > early:
    late = times[early:]
    print(f"the others lived {late[0]:.2f} .. {late[-1]:.2f} s (median {late[len(late) // 2]:.2f} s)")
for s in sockets:
    s.close()
time.sleep(settle)
print(f"server RSS {settle:.0f} s after all closed: {rss_mb():.1f} MB")
