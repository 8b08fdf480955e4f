# Shared by the benchmark scripts that run servers and load generators on loopback
# (gateway-scale.sh, presence-refresh.sh); source it after `set -euo pipefail`.
# It makes a work directory ($work), stops every process listed in $pids and removes $work on
# exit, and raises the open-file limit to the hard limit (tens of thousands of connections).
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # user + system, in 1/$hz s
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
wait_port() {  # port: waits up to 10 s for a listener on 127.0.0.1
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}
wait_line() {  # file, text, seconds
  for _ in $(seq $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "no '$2' in $1 within $3 s" >&2
  return 1
}
