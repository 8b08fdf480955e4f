#!/usr/bin/env bash
# Output path benchmark of the job worker: how fast `jobctl logs` delivers a finished job's
# output, what it costs the client (minor page faults, system time), and what 50 followers of
# one live job get in aggregate while the server's RSS is sampled.
#
# usage: Benchmarks/job-output.sh BIN_DIR [SIZE_MIB] [RUNS] [FOLLOWERS] [STALLED]
#   BIN_DIR holds jobworker and jobctl (e.g. .build/debug or .build-release/release).
#   SIZE_MIB: output of each job (64); RUNS: repetitions of `jobctl logs` (5);
#   FOLLOWERS: concurrent `jobctl logs -f` of one job (50; 0 skips that part);
#   STALLED: `jobctl logs` of the finished job into pipes nobody reads (10; 0 skips that
#   part): the server's RSS before and 5 s after they connected, i.e. what a stalled reader
#   holds on the server.
#   COMPARE_JOBCTL: another jobctl binary, measured against the same server and job, its runs
#   interleaved with BIN_DIR's (e.g. the build before a change).
#   FLOOR: Benchmarks/Micro's GRPCStreamFloor binary, the baseline of the one-client figure:
#   the same transfer (mutual TLS 1.3, jobctl's HTTP/2 settings and aligner, 255 KiB messages)
#   between a server that writes ready-made messages and a client that only counts them,
#   nothing else; a process per run like jobctl, its runs interleaved with BIN_DIR's. It also
#   prints the transfer alone (from its request to the stream's end, connection made).
# After the one-client series, Benchmarks/tls-loopback.py gives the machine's ceiling: the same
# bytes over one TLS 1.3 stream on loopback, without HTTP/2 or gRPC.
# Needs root and cgroups (a real jobworker runs the jobs). Loopback only, certificates, data
# directory and cgroup name private to this run; everything is removed at the end, and every
# step has a timeout, so the whole run is bounded (about 15 minutes at most).
set -euo pipefail
bin=$(cd "$1" && pwd) size_mib=${2:-64} runs=${3:-5} followers=${4:-50} stalled=${5:-10}
size=$((size_mib << 20))
work=$(mktemp -d /tmp/job-output-bench.XXXXXX)
cgroup="bench-output-$$"
server_pid="" floor_pid=""

cleanup() {
  [ -n "$floor_pid" ] && kill -TERM "$floor_pid" 2>/dev/null || true
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    timeout 20 tail --pid="$server_pid" -f /dev/null 2>/dev/null || kill -KILL "$server_pid" 2>/dev/null || true
  fi
  # The server removes its cgroups on a graceful exit; after a crash, leaves first.
  for dir in /sys/fs/cgroup/*/"$cgroup" /sys/fs/cgroup/"$cgroup"; do
    [ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
metrics_port=$(free_port)
"$bin/jobctl" certs init --dir "$work/pki" > /dev/null
export JOBCTL_DIR="$work/pki" JOBCTL_SERVER="127.0.0.1:$port" JOBCTL_USER=admin
"$bin/jobworker" --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics_port" \
  --ca "$work/pki/ca.pem" --cert "$work/pki/server.pem" --key "$work/pki/server-key.pem" \
  --data-dir "$work/data" --cgroup-name "$cgroup" --max-output "$((size_mib + 1))M" \
  --log-level warning > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  "$bin/jobctl" list --timeout 1 > /dev/null 2>&1 && break
  sleep 0.1
done

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$server_pid/status"; }
# User + system CPU ticks of a process: the server's unless another PID is given.
cpu_ticks() { awk '{print $14 + $15}' "/proc/${1:-$server_pid}/stat"; }
wait_ended() {
  for _ in $(seq 600); do
    "$bin/jobctl" status "$1" --output json | grep -q '"state" : "running"' || return 0
    sleep 0.1
  done
  echo "job $1 did not end" >&2
  return 1
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "== $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $bin"

# A finished job of SIZE_MIB random bytes.
id=$("$bin/jobctl" start -- head -c "$size" /dev/urandom)
wait_ended "$id"
expected=$(find "$work/data" -type f -size "${size}c" | head -1 | xargs sha256sum | cut -d' ' -f1)
got=$(timeout 120 "$bin/jobctl" logs "$id" | sha256sum | cut -d' ' -f1)
[ "$got" = "$expected" ] && echo "== logs: exact bytes (sha256 matches the stored log)" \
  || { echo "== logs: WRONG BYTES ($got, stored $expected)"; exit 1; }

# One series per client: `jobctl` of BIN_DIR; COMPARE_JOBCTL's when it is set (another build
# against the same server, job and log); the floor when FLOOR is set. The runs interleave.
clients=(this)
[ -n "${COMPARE_JOBCTL:-}" ] && clients+=(compare)
if [ -n "${FLOOR:-}" ]; then
  clients+=(floor)
  floor_port=$(free_port)
  "$FLOOR" serve "$floor_port" "$work/pki" > "$work/floor-server.log" 2>&1 &
  floor_pid=$!
  for _ in $(seq 50); do
    timeout 10 "$FLOOR" fetch "$floor_port" "$work/pki" 1 1 > /dev/null 2>&1 && break
    sleep 0.1
  done
fi
echo "== jobctl logs ID > /dev/null, ${size_mib} MiB, $runs runs each: ${clients[*]}"
for client in "${clients[@]}"; do : > "$work/logs-$client.txt"; done
hz=$(getconf CLK_TCK)
for run in $(seq "$runs"); do
  for client in "${clients[@]}"; do
    command=("$bin/jobctl" logs "$id") pid=$server_pid
    [ "$client" = compare ] && command=("$COMPARE_JOBCTL" logs "$id")
    [ "$client" = floor ] && command=("$FLOOR" fetch "$floor_port" "$work/pki" "$size_mib" 1 --aligned) \
      pid=$floor_pid
    before=$(cpu_ticks "$pid")
    # Elapsed from the shell's microsecond clock: /usr/bin/time's %e has 10 ms steps, a tenth
    # of a run here.
    start=$EPOCHREALTIME
    timeout 120 /usr/bin/time -f "%U %S %R %M" -o "$work/time.txt" "${command[@]}" > "$work/out.txt"
    elapsed=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.4f", b - a}')
    server_cpu=$(awk -v a="$before" -v b="$(cpu_ticks "$pid")" -v hz="$hz" 'BEGIN {print (b - a) / hz}')
    read -r user sys faults max_rss < "$work/time.txt"
    mbps=$(awk -v s="$size" -v e="$elapsed" 'BEGIN {printf "%.0f", (e > 0 ? s / e / 1e6 : 0)}')
    transfer=""
    [ "$client" = floor ] && transfer=$(awk '{print $6}' "$work/out.txt")
    echo "$elapsed $mbps $user $sys $faults $max_rss $server_cpu $transfer" >> "$work/logs-$client.txt"
    echo "run $run ($client): ${elapsed} s (${mbps} MB/s), client user ${user} s sys ${sys} s," \
      "${faults} minor faults, max RSS ${max_rss} KiB; server CPU ${server_cpu} s" \
      "${transfer:+; the transfer alone $transfer MB/s}"
  done
done
for client in "${clients[@]}"; do
  case $client in
    this) echo "== $bin/jobctl:" ;;
    compare) echo "== $COMPARE_JOBCTL:" ;;
    floor) echo "== floor, $FLOOR:" ;;
  esac
  columns=(1:elapsed_s 2:MB/s 3:user_s 4:sys_s 5:minor_faults 6:max_rss_KiB 7:server_cpu_s)
  [ "$client" = floor ] && columns+=(8:transfer_alone_MB/s)
  for column in "${columns[@]}"; do
    values=$(cut -d' ' -f"${column%%:*}" "$work/logs-$client.txt")
    echo "median ${column#*:}: $(echo "$values" | median) (min $(echo "$values" | sort -n | head -1)," \
      "max $(echo "$values" | sort -n | tail -1))"
  done
done
if [ -n "$floor_pid" ]; then
  kill -TERM "$floor_pid" 2> /dev/null || true
  wait "$floor_pid" 2> /dev/null || true
  floor_pid=""
fi
# The machine's own ceiling for the same bytes: one TLS 1.3 stream over loopback with the
# server's certificate, no HTTP/2, no gRPC, no framing (OpenSSL through Python).
echo "== the machine's ceiling: ${size_mib} MiB over one TLS 1.3 stream on loopback, 3 runs"
timeout 120 python3 "$(dirname "$0")/tls-loopback.py" "$work/pki" "$size_mib" 3

if [ "$stalled" -gt 0 ]; then
  echo "== $stalled x jobctl logs ID of ${size_mib} MiB into a pipe nobody reads"
  rss_before=$(rss_kib)
  # `sleep` never reads its standard input: each jobctl blocks once the pipe (64 KiB) is
  # full, stops reading its stream, and HTTP/2 flow control should then hold the server.
  stalled_pids=()
  for n in $(seq "$stalled"); do
    ( timeout 60 "$bin/jobctl" logs "$id" 2> /dev/null | sleep 60 ) &
    stalled_pids+=($!)
  done
  sleep 5
  rss_stalled=$(rss_kib)
  echo "server RSS KiB: before $rss_before, with $stalled stalled readers $rss_stalled" \
    "($(( (rss_stalled - rss_before) / stalled )) KiB each)"
  # End them (the subshells' children: jobctl and sleep), then let the server settle.
  for pid in "${stalled_pids[@]}"; do pkill -TERM -P "$pid" 2> /dev/null || true; done
  wait "${stalled_pids[@]}" 2> /dev/null || true
  sleep 1
fi

[ "$followers" -gt 0 ] || exit 0
echo "== $followers x jobctl logs -f of one job writing ${size_mib} MiB"
rss_before=$(rss_kib)
# The job waits until every follower is connected (the server counts streams only in its
# metrics, so: a short head start), then writes; the followers end with the job.
id=$("$bin/jobctl" start -- sh -c "sleep 3; head -c $size /dev/urandom")
start=$(date +%s.%N)
cpu_before=$(cpu_ticks)
pids=()
for n in $(seq "$followers"); do
  timeout 600 "$bin/jobctl" logs -f "$id" 2> "$work/follower-$n.err" | wc -c > "$work/follower-$n.count" &
  pids+=($!)
done
rss_peak=$rss_before
while kill -0 "${pids[@]}" 2> /dev/null; do
  rss=$(rss_kib)
  [ "$rss" -gt "$rss_peak" ] && rss_peak=$rss
  sleep 0.2
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
end=$(date +%s.%N)
cpu_after=$(cpu_ticks)
short=0
for n in $(seq "$followers"); do
  [ "$(cat "$work/follower-$n.count")" = "$size" ] || short=$((short + 1))
done
sleep 1
echo "followers: $followers, failed $failed, wrong byte count $short"
awk -v s="$size" -v n="$followers" -v a="$start" -v b="$end" -v c0="$cpu_before" \
  -v c1="$cpu_after" -v hz="$hz" 'BEGIN {
    wall = b - a - 3
    printf "aggregate: %.0f MB/s (%d x %d bytes in %.1f s after the job'"'"'s 3 s head start)\n",
      n * s / wall / 1e6, n, s, wall
    printf "server CPU: %.1f s\n", (c1 - c0) / hz
  }'
echo "server RSS KiB: before $rss_before, peak during $rss_peak, after $(rss_kib)"
