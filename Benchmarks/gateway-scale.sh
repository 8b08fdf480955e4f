#!/usr/bin/env bash
# Gateway at scale, side by side: our gateway and the grpc-go baseline under the same load, in
# one run. For each server: start it (ours with a status service on SQLite), open CLIENTS
# streams over CONNECTIONS connections with Benchmarks/interop/bin/gatewayscale (grpc-go, one
# process), let them settle, then measure over a steady WINDOW:
#   - the ping interval each client sees (p50/p99/p99.9/max) and that no stream ended;
#   - server RSS per stream: (RSS at the window's end − RSS before any client) / CLIENTS;
#   - server CPU per 1,000 clients, as % of one core, over the window (from /proc/PID/stat);
#   - the load generator's own CPU over the window;
#   - that every client is counted: StatusReader for ours (grpcurl), the baseline's own log;
#     the floor server counts nothing: its streams seen (its own log) are reported instead,
#     and never fail the run;
#   - an independent probe: PROBE clients (default 20, one connection each) from a second
#     generator process, whose window is the same and whose intervals are reported apart. A
#     late ping the probe sees too is the server's (or the shared CPUs'); one that only the
#     big generator sees is the generator's own (its Go scheduler and GC with 50,000 streams);
#   - ours only: when the gateway's pings left, from its /metrics over the window: how late
#     its ping timer woke (gateway_ping_timer_lateness_seconds) and how long each event
#     loop's batch of pings took from the timer's visit to its last write
#     (gateway_ping_batch_delay_seconds), as cumulative bucket counts.
# Then prints the rows and our/baseline ratios (< 1 means ours costs less), and the floor's
# against ours. The floor (`floor`) is the smallest server on our stack
# (Benchmarks/Micro's H2FloorServer: swift-nio-http2, pings and pongs, nothing else), what the
# stack itself costs under the same load. Exits 1 when ours or the baseline did not count
# every client (a correctness failure; streams ended by a timeout on an overloaded host are
# reported, not failed: no timing is checked). CI runs a short form:
# `Benchmarks/gateway-scale.sh .build/debug 1000 10 10 swift`.
#
# usage: Benchmarks/gateway-scale.sh BIN_DIR CLIENTS CONNECTIONS [WINDOW_S] [SERVERS]
#   BIN_DIR: release builds of gateway and status (swift build -c release).
#   SERVERS: "swift go" (default), or any of swift, go, floor, floor-multiplexer,
#   floor-frames in any order. floor: H2FloorServer in mode FLOOR_MODE (multiplexer, the
#   default, or frames); floor-multiplexer / floor-frames name the mode. FLOOR_SERVER: its
#   binary (default Benchmarks/Micro/.build/release/H2FloorServer; in Benchmarks/Micro,
#   `swift build -c release --product H2FloorServer` builds it). GO_GATEWAY: the baseline
#   binary (default ../shared/baselines/go-gateway/bin/go-gateway; its build.sh builds it).
#   SOURCES: local addresses to connect from (default: 127.0.0.1 up to 5,000 connections, then
#   one 127.0.0.x per 5,000 connections). LOAD: the load generator (default
#   Benchmarks/interop/bin/gatewayscale, built by interop/build-go.sh). GRPCURL: grpcurl.
#   STATUS_PORT / SWIFT_PORT / GO_PORT / FLOOR_PORT: loopback ports (default 23072 / 23071 /
#   23081 / 23091).
#   PROBE: the probe's clients (default 20; 0: none), on PROBE_CPUS (default LOAD_CPUS).
#   SERVER_CPUS / LOAD_CPUS: CPU lists (taskset -c) for the servers and the load generator,
#   e.g. SERVER_CPUS=0,1 LOAD_CPUS=2-15 on a 16-core host: a 2-core gateway, and a generator
#   that cannot be the bottleneck.
# Loopback only; every process is stopped at the end; the run bounds itself in time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "$1" && pwd) clients=$2 connections=$3 window=${4:-60} servers=${5:-swift go}
go_gateway=${GO_GATEWAY:-$here/../../shared/baselines/go-gateway/bin/go-gateway}
floor_server=${FLOOR_SERVER:-$here/Micro/.build/release/H2FloorServer}
load=${LOAD:-$here/interop/bin/gatewayscale}
[[ -x $load ]] || "$here/interop/build-go.sh" >/dev/null
grpcurl=${GRPCURL:-grpcurl}
on_server_cpus=() on_load_cpus=()
[[ -n ${SERVER_CPUS:-} ]] && on_server_cpus=(taskset -c "$SERVER_CPUS")
[[ -n ${LOAD_CPUS:-} ]] && on_load_cpus=(taskset -c "$LOAD_CPUS")
probe=${PROBE:-20}
on_probe_cpus=("${on_load_cpus[@]}")
[[ -n ${PROBE_CPUS:-} ]] && on_probe_cpus=(taskset -c "$PROBE_CPUS")
expected=$((clients + probe))
source "$here/lib/servers.sh"
if [[ -z ${SOURCES:-} ]]; then
  SOURCES=127.0.0.1
  for ((i = 2; i <= (connections + 4999) / 5000; i++)); do SOURCES+=",127.0.0.$i"; done
fi
# Below the kernel's ephemeral range (32768–60999 by default): a run opens tens of thousands
# of client connections, whose local ports (still in TIME_WAIT or closing when the next server
# starts) made a listener on 50081 fail with "address in use".
status_port=${STATUS_PORT:-23072} swift_port=${SWIFT_PORT:-23071} go_port=${GO_PORT:-23081}
floor_port=${FLOOR_PORT:-23091}
ramp=5000
settle=10

# The gateway's ping-lateness histograms (cumulative bucket counts by upper bound), for ours.
lateness() {  # metrics port
  curl -s --max-time 5 "http://127.0.0.1:$1/metrics" \
    | awk '/^gateway_ping_(timer_lateness|batch_delay)_seconds_(bucket|count)/' || true
}
# Bucket counts of the window: the second scrape minus the first.
lateness_delta() {  # before, after
  awk 'NR == FNR { split($0, f, " "); before[f[1]] = f[2]; next }
    { split($0, f, " "); name = f[1]; sub(/^gateway_ping_/, "", name); sub(/_seconds/, "", name)
      printf "%s %d\n", name, f[2] - before[f[1]] }' "$1" "$2" \
    | awk '{ metric = $1; sub(/_(bucket|count).*/, "", metric); le = $1
      if (le ~ /le=/) { sub(/.*le="/, "", le); sub(/".*/, "", le) } else le = "count"
      line[metric] = line[metric] " " le ":" $2 }
      END { for (m in line) print "   " m ":" line[m] }'
}

declare -A row
measure() {  # name, server pid, port, [metrics port]
  local name=$1 pid=$2 port=$3 metrics_port=${4:-}
  sleep 2  # started and idle
  local rss0 cpu0 cpu1 rss1
  rss0=$(rss_kib "$pid")
  "${on_load_cpus[@]}" "$load" -target "127.0.0.1:$port" -clients "$clients" -connections "$connections" \
    -sources "$SOURCES" -ramp "$ramp" -settle "$settle" -window "$window" -id-prefix "$name" \
    >"$work/$name.json" 2>"$work/$name.err" &
  local load_pid=$! probe_pid=
  if ((probe > 0)); then
    # Its own process and connections, ramped at once, its window opening with the big one's.
    "${on_probe_cpus[@]}" "$load" -target "127.0.0.1:$port" \
      -clients "$probe" -connections "$probe" -ramp "$ramp" \
      -settle $((clients / ramp + settle)) -window "$window" -id-prefix "$name-probe" \
      >"$work/$name-probe.json" 2>"$work/$name-probe.err" &
    probe_pid=$!
  fi
  wait_line "$work/$name.err" "window open" $((clients / ramp + settle + 60))
  cpu0=$(cpu_ticks "$pid")
  [[ -n $metrics_port ]] && lateness "$metrics_port" >"$work/$name.lateness0"
  wait_line "$work/$name.err" "window closed" $((window + 60))
  cpu1=$(cpu_ticks "$pid")
  rss1=$(rss_kib "$pid")
  [[ -n $metrics_port ]] && lateness "$metrics_port" >"$work/$name.lateness1"
  local counted
  local seen=counted
  case $name in
  swift)
    counted=$("$grpcurl" -plaintext -max-time 10 127.0.0.1:$status_port \
      tenten.interview.StatusReader/FetchOnlineUsersInLast3Mins \
      | awk -F'"' '/onlineUsers/ {print $4}')
    ;;
  go) counted=$(grep -o 'users_seen=[0-9]*' "$work/go.log" | tail -1 | cut -d= -f2) ;;
  *)  # the floor: streams it has seen (its stats line, once a second)
    sleep 1.2
    counted=$(grep -o 'streams_seen=[0-9]*' "$work/$name.log" | tail -1 | cut -d= -f2)
    seen="streams seen"
    ;;
  esac
  wait "$load_pid" || echo "$name: the load generator reports streams ended (see below)"
  [[ -z $probe_pid ]] || wait "$probe_pid" \
    || echo "$name: the probe reports streams ended (see below)"
  local cores per_stream per_thousand
  cores=$(awk "BEGIN {printf \"%.4f\", ($cpu1 - $cpu0) / $hz / $window}")
  per_stream=$(awk "BEGIN {printf \"%.2f\", ($rss1 - $rss0) / $expected}")
  per_thousand=$(awk "BEGIN {printf \"%.3f\", $cores * 100 * 1000 / $expected}")
  row[$name]="$per_stream $per_thousand $cores $rss0 $rss1 ${counted:-?}"
  echo "== $name: $(cat "$work/$name.json")"
  ((probe == 0)) || echo "== $name probe: $(cat "$work/$name-probe.json")"
  echo "   server: RSS $rss0 KiB idle → $rss1 KiB loaded; CPU $cores cores over ${window} s;" \
    "$seen ${counted:-?} of $expected"
  if [[ -s $work/$name.lateness1 ]]; then
    echo "   gateway ping lateness over the window (bucket upper bound in s: count):"
    lateness_delta "$work/$name.lateness0" "$work/$name.lateness1"
  fi
}

for server in $servers; do
  case $server in
  swift)
    "${on_server_cpus[@]}" "$bin/status" --listen 127.0.0.1:$status_port --metrics-listen 127.0.0.1:9172 \
      --store "sqlite:$work/status.sqlite" --log-level warning >"$work/status.log" 2>&1 &
    pids+=($!)
    "${on_server_cpus[@]}" "$bin/gateway" --listen 127.0.0.1:$swift_port --metrics-listen 127.0.0.1:9171 \
      --status 127.0.0.1:$status_port --max-clients $((clients + 1000)) \
      --max-connections $((connections + 1000)) \
      --max-connections-per-address $((connections + 1000)) \
      --log-level warning >"$work/swift.log" 2>&1 &
    gateway=$!
    pids+=("$gateway")
    wait_port "$status_port"
    wait_port "$swift_port"
    measure swift "$gateway" "$swift_port" 9171
    ;;
  go)
    "${on_server_cpus[@]}" "$go_gateway" --listen 127.0.0.1:$go_port --stats-interval 5s >"$work/go.log" 2>&1 &
    gateway=$!
    pids+=("$gateway")
    wait_port "$go_port"
    measure go "$gateway" "$go_port"
    ;;
  floor | floor-multiplexer | floor-frames)
    mode=${server#floor-}
    [[ $mode == floor ]] && mode=${FLOOR_MODE:-multiplexer}
    "${on_server_cpus[@]}" "$floor_server" --listen 127.0.0.1:$floor_port --mode "$mode" \
      --stats-interval 1 >"$work/$server.log" 2>&1 &
    gateway=$!
    pids+=("$gateway")
    wait_port "$floor_port"
    measure "$server" "$gateway" "$floor_port"
    ;;
  *)
    echo "unknown server $server (swift, go, floor, floor-multiplexer, floor-frames)" >&2
    exit 2
    ;;
  esac
  kill -TERM "$gateway"
  wait "$gateway" 2>/dev/null || true
done

echo
echo "clients=$clients (+ probe $probe) connections=$connections window=${window}s" \
  "sources=$SOURCES" \
  "host=$(nproc) cores server_cpus=${SERVER_CPUS:-all} load_cpus=${LOAD_CPUS:-all}" \
  "$(date -u +%FT%TZ)"
printf '%-17s %16s %22s %12s %10s\n' server "RSS/stream KiB" "CPU/1000 clients %core" "cores" counted
# (with one stream per connection, RSS per stream is RSS per connection)
for server in $servers; do
  read -r per_stream per_thousand cores _ _ counted <<<"${row[$server]}"
  printf '%-17s %16s %22s %12s %10s\n' "$server" "$per_stream" "$per_thousand" "$cores" "$counted"
done
miscounted=0
for server in $servers; do
  [[ $server == floor* ]] && continue  # streams seen, not a count of users
  read -r _ _ _ _ _ counted <<<"${row[$server]}"
  if [[ $counted != "$expected" ]]; then
    echo "$server counted $counted of $expected clients" >&2
    miscounted=1
  fi
done
if [[ -n ${row[swift]:-} && -n ${row[go]:-} ]]; then
  read -r s_mem s_cpu _ <<<"${row[swift]}"
  read -r g_mem g_cpu _ <<<"${row[go]}"
  echo "ratio swift/go: RSS per stream $(awk "BEGIN {printf \"%.2f\", $s_mem / $g_mem}")," \
    "CPU per client $(awk "BEGIN {printf \"%.2f\", $s_cpu / $g_cpu}")"
fi
for server in $servers; do
  [[ $server == floor* && -n ${row[swift]:-} ]] || continue
  read -r s_mem s_cpu _ <<<"${row[swift]}"
  read -r f_mem f_cpu _ <<<"${row[$server]}"
  echo "ratio swift/$server: RSS per stream $(awk "BEGIN {printf \"%.2f\", $s_mem / $f_mem}")," \
    "CPU per client $(awk "BEGIN {printf \"%.2f\", $s_cpu / $f_cpu}")"
done
exit $miscounted
