#!/usr/bin/env python3
"""One launch of the scale benchmark: the Patch Tuesday job on N nodes of the local Slurm cluster at once;
prints one JSON result row on stdout (and a line on stderr).

    scale_launch.py --nodes N --strategy S --cache cold|warm --version V --image REF --mode unpacked|lazy
                    --store DIR [--node-local] --data DIR --slipway BIN [--cache-metrics URL] [--timeout S]
                    [--label k=v ...]

Clock: t = 0 just before `sbatch`, once every node is idle; the job is one task per node
(bench/etl/scale-job.sh). Each task's worker writes DATA/results/vV.task-RANK.json with the time it began (the
image was there and the container started) and the time it wrote its result (same clock: the nodes are
namespaces of this machine). Figures, in seconds from submission: t_job_start (Slurm started the batch step),
t_first_start/t_last_start (first and last task to begin), t_first_result/t_last_result (first and last result
written), t_job_end (the batch step saw every task end).
Bytes: upstream_bytes = what crossed the registry host's link (the rx counter of slwcl-rh, whoever asked);
node_link_bytes = the sum over the nodes of what their links received (tx counters of slwcl-nI on the
bridge); cache_upstream_bytes = the cache server's own count of upstream payload, when it is in the path.
cpu_busy and io_wait = the fractions of the machine's CPU time in use and idle waiting for the disk from
submission to the job's end (the nodes share its cores and its disk).
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import time
import urllib.request

from benchlib import drop_caches, load_average

ap = argparse.ArgumentParser()
ap.add_argument("--nodes", type=int, required=True)
ap.add_argument("--strategy", required=True)
ap.add_argument("--cache", choices=["cold", "warm"], required=True)
ap.add_argument("--version", type=int, required=True)
ap.add_argument("--image", required=True)
ap.add_argument("--mode", choices=["unpacked", "lazy"], required=True)
ap.add_argument("--store", required=True)
ap.add_argument("--node-local", action="store_true")
ap.add_argument("--plugin", action="store_true", help="run the tasks through the SPANK plugin (srun --container-image), not slipway run")
ap.add_argument("--data", required=True)
ap.add_argument("--slipway", required=True)
ap.add_argument("--cache-metrics", help="the cache server's /metrics URL, when the launch goes through it")
ap.add_argument("--timeout", type=float, default=900)
ap.add_argument("--label", action="append", default=[])
args = ap.parse_args()

row = dict(kv.split("=", 1) for kv in args.label)
row.update(bench="scale", nodes=args.nodes, strategy=args.strategy, cache=args.cache, version=args.version,
           image=args.image, ok=False, error="")
results = os.path.join(args.data, "results")
job_script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scale-job.sh")


def counter(path):
    with open(path) as f:
        return int(f.read())


def upstream_counter():
    return counter("/sys/class/net/slwcl-rh/statistics/rx_bytes")


def node_link_counter():
    """Every node's link, not node1..nodeN: Slurm picks the job's nodes (the idle rest add nothing)."""
    return sum(counter(path) for path in glob.glob("/sys/class/net/slwcl-n[0-9]*/statistics/tx_bytes"))


def cache_upstream():
    if not args.cache_metrics:
        return None
    with urllib.request.urlopen(args.cache_metrics, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("slipway_cache_upstream_bytes_total "):
                return int(float(line.split()[1]))
    return None


def cpu_ticks(path="/proc/stat"):
    """(busy, waiting for I/O, total) jiffies of the whole machine; guest time is already in user time."""
    with open(path) as f:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    busy = user + nice + system + irq + softirq + steal
    return busy, iowait, busy + idle + iowait


def settle(timeout=60):
    """Waits until every node is idle: a node still completing the previous job would hold this one pending
    until the scheduler's next pass, and that wait is Slurm's, not the launch's."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True).stdout.split()
        if states and all(s == "idle" for s in states):
            return
        time.sleep(0.2)


def read_time(path):
    with open(path) as f:
        return float(f.read())


for stale in glob.glob(os.path.join(results, "*")) + [os.path.join(args.data, n) for n in ("job-start", "job-end", "job-end.stat")]:
    if os.path.isfile(stale):
        os.remove(stale)
os.makedirs(results, exist_ok=True)
if args.cache == "cold":
    drop_caches()
environment = dict(os.environ, IMAGE=args.image, MODE=args.mode, STORE=args.store, DATA=args.data,
                   SLIPWAY=args.slipway, SCALE_JOB=job_script, NODE_LOCAL="1" if args.node_local else "0",
                   PLUGIN="1" if args.plugin else "0")
output = os.path.join(args.data, "job.out")
settle()
before = upstream_counter(), node_link_counter(), cache_upstream(), cpu_ticks()
row["load1"] = load_average()
t_submit = time.time()
try:
    job = subprocess.run(["sbatch", "--parsable", "--wait", "-N", str(args.nodes), "--ntasks-per-node=1", f"--output={output}",
                          "--job-name", f"scale-{args.strategy}", job_script],
                         env=environment, capture_output=True, text=True, timeout=args.timeout)
    after = upstream_counter(), node_link_counter(), cache_upstream()
    row["job"] = job.stdout.strip().split(";")[0]
    tasks = []
    for path in sorted(glob.glob(os.path.join(results, f"v{args.version}.task-*.json"))):
        with open(path) as f:
            summary = json.load(f)
        tasks.append({"task": summary["task"], "node": summary["node"], "version": summary["version"],
                      "start": summary["t_start"] - t_submit, "result": summary["t_end"] - t_submit})
    row["tasks"] = sorted(tasks, key=lambda t: t["task"])
    nodes = {t["node"] for t in tasks}
    if job.returncode != 0 or len(tasks) != args.nodes or len(nodes) != args.nodes:
        with open(output, errors="replace") as f:
            tail = " | ".join(f.read().strip().splitlines()[-4:])[-400:]
        raise RuntimeError(f"sbatch exited {job.returncode} with {len(tasks)} results from {len(nodes)} nodes of "
                           f"{args.nodes}: {job.stderr.strip()} {tail}")
    if any(t["version"] != f"v{args.version}" for t in tasks):
        raise RuntimeError(f"a task ran the wrong version: {[t['version'] for t in tasks]}")
    starts, ends = sorted(t["start"] for t in tasks), sorted(t["result"] for t in tasks)
    row.update(t_first_start=starts[0], t_last_start=starts[-1], t_first_result=ends[0], t_last_result=ends[-1],
               t_median_result=ends[len(ends) // 2], t_job_start=read_time(os.path.join(args.data, "job-start")) - t_submit,
               t_job_end=read_time(os.path.join(args.data, "job-end")) - t_submit,
               upstream_bytes=after[0] - before[0], node_link_bytes=after[1] - before[1],
               ok=True)
    cpu_end = cpu_ticks(os.path.join(args.data, "job-end.stat"))
    total = max(cpu_end[2] - before[3][2], 1)
    row.update(cpu_busy=round((cpu_end[0] - before[3][0]) / total, 3), io_wait=round((cpu_end[1] - before[3][1]) / total, 3))
    if before[2] is not None and after[2] is not None:
        row["cache_upstream_bytes"] = after[2] - before[2]
except subprocess.TimeoutExpired:
    subprocess.run(["scancel", "--name", f"scale-{args.strategy}"], capture_output=True)
    row["error"] = f"timed out after {args.timeout:.0f} s"
except (OSError, RuntimeError, ValueError, KeyError) as e:
    row["error"] = str(e)
print(json.dumps(row))
if row["ok"]:
    print(f"  {args.strategy:7} {args.cache} N={args.nodes:<2} last start {row['t_last_start']:6.2f} s, last result "
          f"{row['t_last_result']:6.2f} s, job end {row['t_job_end']:6.2f} s, upstream {row['upstream_bytes'] / 1e6:7.1f} MB, "
          f"node links {row['node_link_bytes'] / 1e6:7.1f} MB, cpu {row['cpu_busy']:.0%}, io wait {row['io_wait']:.0%}",
          file=sys.stderr)
else:
    print(f"  {args.strategy:7} {args.cache} N={args.nodes:<2} FAILED: {row['error']}", file=sys.stderr)
