#!/usr/bin/env bash
# Load benchmark of the online counter: one status (SQLite), one gateway, one load client
# process simulating CLIENTS users over CONNECTIONS HTTP/2 connections, for SECONDS.
#
# usage: Benchmarks/counter-load.sh BIN_DIR CLIENTS SECONDS [CONNECTIONS]
#   BIN_DIR holds release builds of status, gateway, client (and optionally grpcurl).
# Prints: the client's summaries (connected, ping interval p50/p99), gateway and status CPU
# time and peak RSS, and the count StatusReader reports at the end (must equal CLIENTS).
# Loopback only; every process is stopped at the end, the script bounds itself in time.
set -euo pipefail
bin=$1 clients=$2 seconds=$3 connections=${4:-16}
work=$(mktemp -d)
# Stop clients first, then the gateway (its final flush needs status), then status.
cleanup() {
  for pid in ${client_pid:-} ${gateway_pid:-} ${status_pid:-}; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 1048576 2>/dev/null || ulimit -n 65536 || true

"$bin/status" --listen 127.0.0.1:50052 --metrics-listen 127.0.0.1:9102 \
  --store "sqlite:$work/status.sqlite" --log-level warning &
status_pid=$!
"$bin/gateway" --listen 127.0.0.1:50051 --metrics-listen 127.0.0.1:9101 \
  --status 127.0.0.1:50052 --max-clients $((clients + 1000)) --log-level warning &
gateway_pid=$!
sleep 2
stdbuf -oL "$bin/client" --count "$clients" --connections "$connections" --id bench \
  --gateway 127.0.0.1:50051 --summary-interval 5 --log-level warning > "$work/client.log" 2>&1 &
client_pid=$!
sleep "$seconds"

echo "== client summaries (last 4)"
tail -n 4 "$work/client.log"
for name in gateway status client; do
  pid_var=${name}_pid
  pid=${!pid_var}
  read -r utime stime < <(awk '{print $14, $15}' "/proc/$pid/stat")
  hz=$(getconf CLK_TCK)
  echo "== $name: cpu $(( (utime + stime) / hz )) s over ${seconds}+ s," \
    "peak RSS $(awk '/VmHWM/ {print $2, $3}' "/proc/$pid/status")," \
    "threads $(awk '/Threads/ {print $2}' "/proc/$pid/status")"
done
if [ -x "$bin/grpcurl" ]; then
  echo "== StatusReader.FetchOnlineUsersInLast3Mins (expected $clients)"
  sleep 2  # one more presence flush
  "$bin/grpcurl" -plaintext -max-time 5 127.0.0.1:50052 \
    tenten.interview.StatusReader/FetchOnlineUsersInLast3Mins
fi
