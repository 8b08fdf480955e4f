"""What the job worker's benchmark scripts share (job-start.py, job-cli.py): a private
`jobworker` on loopback with its own certificates, data directory and cgroup name, stopped
and cleaned up at the end, and percentiles. `free_port` and `stop` also serve statusbench.py
and h2-split-flood.py."""
import os, shutil, signal, socket, subprocess, sys, tempfile, threading, time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process, timeout):
    """Ends a server the benchmark started: SIGTERM, SIGKILL if it is still running after
    `timeout` seconds; returns once it has exited."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_timed(argv, env=None, timeout=30):
    """Runs argv (output discarded, failure raises) and returns (elapsed ms, CPU ms of the
    process: user + system).

    The wait blocks in wait4(2). `subprocess.run(..., timeout=)` must not time a program:
    with a timeout, Popen.wait polls with sleeps of 1, 2, 4, 8, 16, 32 ms, so every sample
    was rounded up to about 3, 7, 15, 31 or 63 ms (the 32 ms `jobctl list` and `run` figures
    of earlier runs were that rounding). A watchdog kills a program past `timeout`."""
    t = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        watchdog.cancel()
    elapsed = (time.perf_counter() - t) * 1000
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, argv)
    return elapsed, (usage.ru_utime + usage.ru_stime) * 1000


def field(number, payload: bytes):
    """A length-delimited protobuf field (wire type 2)."""
    key, size, out = (number << 3) | 2, len(payload), bytearray()
    out.append(key)
    while size >= 0x80:
        out.append((size & 0x7F) | 0x80)
        size >>= 7
    out.append(size)
    return bytes(out) + payload


def start_request(command, *args):
    """A serialized `StartJobRequest` (command = 1, arguments = 2)."""
    return field(1, command.encode()) + b"".join(field(2, a.encode()) for a in args)


def proc_stat(pid):
    """utime + stime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(samples, p):
    samples = sorted(samples)
    return samples[min(len(samples) - 1, int(len(samples) * p))]


class Server:
    """A `jobworker` from BIN_DIR allowing `jobs` running jobs, with `jobctl certs init`
    certificates in `<work>/pki`. `stop()` stops it (SIGTERM, then SIGKILL after 60 s),
    removes cgroups a crash left behind (leaves first) and the work directory; use it in a
    `finally`. SIGTERM to the benchmark exits through that `finally`."""

    def __init__(self, bin_dir, name, jobs):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
        self.work = tempfile.mkdtemp(prefix=f"job-{name}-bench.")
        self.cgroup = f"bench-{name}-{os.getpid()}"
        self.pki = f"{self.work}/pki"
        self.process = None
        subprocess.run([f"{bin_dir}/jobctl", "certs", "init", "--dir", self.pki], check=True,
                       stdout=subprocess.DEVNULL, timeout=30)
        self.port = free_port()
        self.process = subprocess.Popen(
            [f"{bin_dir}/jobworker", "--listen", f"127.0.0.1:{self.port}",
             "--metrics-listen", f"127.0.0.1:{free_port()}", "--ca", f"{self.pki}/ca.pem",
             "--cert", f"{self.pki}/server.pem", "--key", f"{self.pki}/server-key.pem",
             "--data-dir", f"{self.work}/data", "--cgroup-name", self.cgroup,
             "--log-level", "warning", "--max-jobs-per-user", str(jobs + 10),
             "--shutdown-grace", "30"],
            stdout=open(f"{self.work}/server.log", "w"), stderr=subprocess.STDOUT)

    def start_job_call(self):
        """One mutual-TLS grpcio channel to the server (as the admin client) and its raw
        `StartJob` call, which takes `start_request(...)` bytes. Needs the grpcio module."""
        import grpc
        read = lambda name: open(f"{self.pki}/{name}", "rb").read()
        credentials = grpc.ssl_channel_credentials(
            read("ca.pem"), read("admin-key.pem"), read("admin.pem"))
        channel = grpc.secure_channel(f"127.0.0.1:{self.port}", credentials)
        grpc.channel_ready_future(channel).result(timeout=30)
        return channel, channel.unary_unary("/jobworker.v1.JobWorker/StartJob")

    def stop(self):
        if self.process:
            stop(self.process, timeout=60)
        for controller in os.listdir("/sys/fs/cgroup"):
            root = f"/sys/fs/cgroup/{controller}/{self.cgroup}"
            if os.path.isdir(root):
                for path, _, _ in sorted(os.walk(root), key=lambda w: -len(w[0])):
                    try:
                        os.rmdir(path)
                    except OSError:
                        pass
        shutil.rmtree(self.work, ignore_errors=True)
