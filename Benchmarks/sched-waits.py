#!/usr/bin/env python3
"""Run-queue waits of a process's serving threads, from `perf sched record` (issue 12).

usage: sched-waits.py PERF_DATA PID [--threads PREFIX,...]

For each thread of PID whose name starts with one of PREFIXES (default: `NIO-` event loops and
`oot.default-qos`, the Swift cooperative pool): every wait from its waking (sched_waking) or
its preemption (switched out runnable) to its next switch-in. Prints how many waits there were,
how many over 1 and 3 ms, what held the CPU the thread was queued on meanwhile (by command
name; the process's own threads by thread name, its libdispatch worker threads — SQLite's, in
status — as `dispatch`), and how much of that time another CPU was idle. Record with, e.g.:

    perf sched record -k monotonic -a -o sched.data -- sleep 8    # during the timed calls

Thread names are read from /proc while PID still runs, so run this before the process ends
(or pass --names FILE, lines `TID NAME`)."""
import argparse, collections, os, re, subprocess

parser = argparse.ArgumentParser()
parser.add_argument("data")
parser.add_argument("pid", type=int)
parser.add_argument("--threads", default="NIO-,oot.default-qos")
parser.add_argument("--names")
args = parser.parse_args()

if args.names:
    names = {int(l.split()[0]): l.split(None, 1)[1].strip() for l in open(args.names) if l.strip()}
else:
    names = {int(t): open(f"/proc/{args.pid}/task/{t}/comm").read().strip()
             for t in os.listdir(f"/proc/{args.pid}/task")}
prefixes = tuple(args.threads.split(","))
serving = {t for t, n in names.items() if n.startswith(prefixes) and "overcommit" not in n}


def holder(comm, tid):
    if tid == 0:
        return "(idle)"
    if tid in names:
        return "this process: " + ("dispatch" if "qos.overcommit" in names[tid] else names[tid])
    return comm


script = subprocess.run(["perf", "script", "-i", args.data, "-F", "comm,tid,cpu,time,event,trace"],
                        capture_output=True, text=True, check=True).stdout
current = {}  # cpu -> (comm, tid) running
queued = {}  # tid -> (since, cpu, Counter of holders, [seconds with a CPU idle])
waits = []  # (seconds, Counter, seconds with a CPU idle)
last = None
for line in script.splitlines():
    m = re.match(r"\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)", line)
    if not m:
        continue
    cpu, t, event, trace = int(m.group(3)), float(m.group(4)), m.group(5), m.group(6)
    if last is not None:
        idle = any(tid == 0 for _, tid in current.values())
        for since, on, held, idle_s in queued.values():
            held[holder(*current.get(on, ("?", -1)))] += t - last
            idle_s[0] += (t - last) if idle else 0
    last = t
    if event == "sched:sched_waking":
        w = re.search(r"pid=(\d+) .*target_cpu=(\d+)", trace)
        tid = int(w.group(1))
        if tid in serving and tid not in queued:
            queued[tid] = (t, int(w.group(2)), collections.Counter(), [0.0])
    elif event == "sched:sched_migrate_task":
        w = re.search(r"pid=(\d+) .*dest_cpu=(\d+)", trace)
        tid = int(w.group(1))
        if tid in queued:  # placed on another CPU than the one it last ran on
            since, _, held, idle_s = queued[tid]
            queued[tid] = (since, int(w.group(2)), held, idle_s)
    elif event == "sched:sched_switch":
        s = re.search(r"prev_comm=(.*) prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=(.*) "
                      r"next_pid=(\d+)", trace)
        prev, state, nxt = int(s.group(2)), s.group(3), int(s.group(5))
        current[cpu] = (s.group(4), nxt)
        if prev in serving and state.startswith("R"):
            queued[prev] = (t, cpu, collections.Counter(), [0.0])
        if nxt in queued:
            since, _, held, idle_s = queued.pop(nxt)
            waits.append((t - since, held, idle_s[0]))

long = [w for w in waits if w[0] > 0.001]
print(f"{len(waits)} waits, {sum(w[0] for w in waits) * 1000:.0f} ms; over 1 ms: {len(long)} "
      f"({sum(w[0] for w in long) * 1000:.0f} ms), over 3 ms: {sum(w[0] > 0.003 for w in waits)}")
held = collections.Counter()
for _, h, _ in long:
    held.update(h)
total = sum(held.values()) or 1
print("waits over 1 ms: the CPU each was queued on was held by")
for name, seconds in held.most_common(10):
    print(f"  {name:32} {seconds / total * 100:5.1f}%")
if long:
    print(f"  and another CPU was idle {sum(w[2] for w in long) / sum(w[0] for w in long) * 100:.0f}%"
          " of their time")
