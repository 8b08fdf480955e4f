#!/usr/bin/env bash
# Memory of each job's init under a real job worker: starts a jobworker from BIN_DIR (root,
# loopback, its own data directory, cgroup name and certificates), starts JOBS `sleep 300` jobs
# with jobctl, and prints for every job's init (PID 1 of a job, found through its NSpid) its
# command line as `ps` shows it, Private_Dirty and Pss (/proc/PID/smaps_rollup) and page tables
# (VmPTE), then the same for one `sleep`. Everything is stopped at the end.
#
# usage: sudo Benchmarks/job-init-memory.sh BIN_DIR [JOBS]
#   BIN_DIR holds jobworker, jobctl and jobinit (e.g. .build/debug after `swift build`).
set -euo pipefail
bin=$1 jobs=${2:-10}
work=$(mktemp -d)
port=$((40000 + RANDOM % 20000))
cleanup() {
  [[ -n ${worker_pid:-} ]] && kill -TERM "$worker_pid" 2>/dev/null && wait "$worker_pid" || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/jobctl" certs init --dir "$work/certs" >/dev/null
"$bin/jobworker" --ca "$work/certs/ca.pem" --cert "$work/certs/server.pem" \
  --key "$work/certs/server-key.pem" --data-dir "$work/data" \
  --cgroup-name "init-memory-$$" --listen "127.0.0.1:$port" \
  --metrics-listen "127.0.0.1:$((port + 1))" >"$work/worker.log" 2>&1 &
worker_pid=$!
export JOBCTL_DIR=$work/certs JOBCTL_SERVER=127.0.0.1:$port JOBCTL_USER=alice
for _ in $(seq 50); do "$bin/jobctl" list >/dev/null 2>&1 && break; sleep 0.1; done
for _ in $(seq "$jobs"); do "$bin/jobctl" start -- sleep 300 >/dev/null; done

report() {
  local pid=$1
  printf '%-7s %-8s private_dirty=%sKiB pss=%sKiB pte=%sKiB  %s\n' "$pid" \
    "$(awk '/^Uid:/{print $2}' "/proc/$pid/status")" \
    "$(awk '/^Private_Dirty:/{print $2}' "/proc/$pid/smaps_rollup")" \
    "$(awk '/^Pss:/{print $2}' "/proc/$pid/smaps_rollup")" \
    "$(awk '/^VmPTE:/{print $2}' "/proc/$pid/status")" \
    "$(tr '\0' ' ' <"/proc/$pid/cmdline")"
}
# The worker's children are the inits: PID 1 of their namespace.
for pid in $(pgrep -P "$worker_pid"); do
  [[ $(awk '/^NSpid:/{print $NF}' "/proc/$pid/status") == 1 ]] && report "$pid"
done
echo "one sleep:"
report "$(pgrep -P "$(pgrep -P "$worker_pid" | head -1)" | head -1)"
