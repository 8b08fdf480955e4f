#!/usr/bin/env bash
# What the gateway's presence refresh (`--presence-refresh`) saves: status's writes and both
# servers' CPU for the same clients, for each refresh given. For each REFRESH (seconds): start
# status (SQLite) and a gateway with `--presence-refresh REFRESH`, open CLIENTS streams over
# CONNECTIONS connections with Benchmarks/interop/bin/gatewayscale, let them settle, then over
# a WINDOW measure the records status accepted per second (its /metrics), status's and the
# gateway's CPU (from /proc), and check that status counts every client (exits 1 otherwise;
# no timing is checked). Prints one line per refresh.
#
# usage: Benchmarks/presence-refresh.sh BIN_DIR [CLIENTS=10000] [CONNECTIONS=100] [WINDOW_S=30] [REFRESH…=10 0]
#   BIN_DIR: release builds of gateway and status. LOAD: the load generator (default
#   Benchmarks/interop/bin/gatewayscale, built by interop/build-go.sh). GRPCURL: grpcurl.
#   STATUS_PORT / GATEWAY_PORT: loopback ports (default 23172 / 23171), their /metrics on
#   9272 / 9271. CI's short form: Benchmarks/presence-refresh.sh .build/debug 500 5 5 10
# Loopback only; every process is stopped at the end; each wait is bounded.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "$1" && pwd) clients=${2:-10000} connections=${3:-100} window=${4:-30}
shift $(($# < 4 ? $# : 4))
refreshes=("$@")
((${#refreshes[@]})) || refreshes=(10 0)
load=${LOAD:-$here/interop/bin/gatewayscale}
[[ -x $load ]] || "$here/interop/build-go.sh" >/dev/null
grpcurl=${GRPCURL:-grpcurl}
status_port=${STATUS_PORT:-23172} gateway_port=${GATEWAY_PORT:-23171}
source "$here/lib/servers.sh"
accepted() {
  curl -s --max-time 5 "http://127.0.0.1:9272/metrics" \
    | awk '/^status_presence_records_total\{result="accepted"\}/ {print $2}'
}

failed=0
for refresh in "${refreshes[@]}"; do
  rm -f "$work"/*
  "$bin/status" --listen 127.0.0.1:$status_port --metrics-listen 127.0.0.1:9272 \
    --store "sqlite:$work/status.sqlite" --log-level warning >"$work/status.log" 2>&1 &
  status_pid=$!
  "$bin/gateway" --listen 127.0.0.1:$gateway_port --metrics-listen 127.0.0.1:9271 \
    --status 127.0.0.1:$status_port --max-clients $((clients + 1000)) \
    --presence-refresh "$refresh" --log-level warning >"$work/gateway.log" 2>&1 &
  gateway_pid=$!
  pids=("$status_pid" "$gateway_pid")
  wait_port $status_port
  wait_port $gateway_port
  "$load" -target "127.0.0.1:$gateway_port" -clients "$clients" -connections "$connections" \
    -ramp 5000 -settle 12 -window "$window" -id-prefix "refresh$refresh" \
    >"$work/load.json" 2>"$work/load.err" &
  load_pid=$!
  pids+=("$load_pid")
  wait_line "$work/load.err" "window open" $((clients / 5000 + 12 + 60))
  a0=$(accepted) g0=$(cpu_ticks "$gateway_pid") s0=$(cpu_ticks "$status_pid") t0=$EPOCHREALTIME
  wait_line "$work/load.err" "window closed" $((window + 60))
  a1=$(accepted) g1=$(cpu_ticks "$gateway_pid") s1=$(cpu_ticks "$status_pid") t1=$EPOCHREALTIME
  wait "$load_pid" || true
  counted=$("$grpcurl" -plaintext -max-time 10 127.0.0.1:$status_port \
    tenten.interview.StatusReader/FetchOnlineUsersInLast3Mins | awk -F'"' '/onlineUsers/ {print $4}')
  awk -v r="$refresh" -v a0="$a0" -v a1="$a1" -v g0="$g0" -v g1="$g1" -v s0="$s0" -v s1="$s1" \
    -v t0="$t0" -v t1="$t1" -v n="$clients" -v c="${counted:-0}" -v hz="$hz" 'BEGIN {
      dt = t1 - t0
      printf "refresh %s s, %d clients: status accepted %.0f records/s; CPU status %.2f %%, gateway %.2f %% of a core (%.2f %% per 1,000 clients); counted %d of %d; window %.1f s\n",
        r, n, (a1 - a0) / dt, (s1 - s0) / hz / dt * 100, (g1 - g0) / hz / dt * 100,
        (g1 - g0) / hz / dt * 100 / (n / 1000), c, n, dt }'
  [[ ${counted:-0} == "$clients" ]] || failed=1
  kill -TERM "$gateway_pid" "$status_pid" 2>/dev/null || true
  wait "$gateway_pid" "$status_pid" 2>/dev/null || true
  pids=()
done
exit $failed
