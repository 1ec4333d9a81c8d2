#!/usr/bin/env python3
"""Container start for an image already on the node: containerd with its overlayfs snapshotter against containerd
with Slipway's snapshotter (lazy eStargz layers, fully prefetched), in one run.

    container-start.py --registry HOST:PORT [--repo etl] [--tag v1] [--runs 20] --slipway BIN --dir DIR --out PREFIX

Each variant gets a private containerd (root in DIR/VARIANT) and pulls the image once (`ctr image pull` of TAG;
`ctr-remote image rpull` of TAG-esgz through `slipway snapshotter --prefetch all`, then waits until every lazy
layer is local, as on a node that has run the image before). Then, alternating variants, RUNS times:
`ctr run --rm IMAGE NAME /bin/true`, timed from the command's start to its end (snapshot Prepare, mounts, runc
create and start, the process, teardown), after one untimed start per variant (the first start of a fresh
containerd pays for loading its shim and runc, about a second). Page caches stay warm: the question is the
snapshotter's overhead on a node that has the image, not the network. Writes PREFIX.jsonl (one row per start) and
PREFIX.md (mean, median, sd; the ratio of medians).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from benchlib import Containerd, SlipwaySnapshotter, load_average

ap = argparse.ArgumentParser()
ap.add_argument("--registry", required=True)
ap.add_argument("--repo", default="etl")
ap.add_argument("--tag", default="v1")
ap.add_argument("--runs", type=int, default=20)
ap.add_argument("--slipway", required=True)
ap.add_argument("--dir", required=True)
ap.add_argument("--out", required=True)
args = ap.parse_args()


def prepare(variant):
    """Starts a containerd (and snapshotter) in DIR/VARIANT, recorded in `nodes` at once so that a failure later
    still stops them, and pulls the image into it."""
    directory = os.path.abspath(os.path.join(args.dir, variant))
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    snapshotter = None
    ref = f"{args.registry}/{args.repo}:{args.tag}"
    if variant == "containerd-slipway":
        ref += "-esgz"
        snapshotter = SlipwaySnapshotter(args.slipway, directory, os.path.join(directory, "store"), "all")
        nodes[variant] = (None, snapshotter, ref)
    containerd = Containerd(directory, snapshotter)
    nodes[variant] = (containerd, snapshotter, ref)
    pulled = subprocess.run(containerd.pull_args(ref), capture_output=True, text=True)
    if pulled.returncode != 0:
        raise RuntimeError(f"{variant}: pull of {ref} failed: {pulled.stderr.strip()[-300:]}")
    if snapshotter:
        wait_for_prefetch(snapshotter)


def wait_for_prefetch(snapshotter, limit=600):
    """Until every lazy layer's mount reports its prefetch finished; there must be some, or this would measure
    ordinary snapshots."""
    lazy = os.path.join(snapshotter.store, "snapshotter", "lazy")
    if not os.path.isdir(lazy) or not os.listdir(lazy):
        raise RuntimeError("the pull mounted no layer lazily (see snapshotter.log)")
    deadline = time.time() + limit
    while time.time() < deadline:
        done = True
        for name in os.listdir(lazy):
            r = subprocess.run([args.slipway, "status", "--json", "--store", snapshotter.store, os.path.join(lazy, name)],
                               capture_output=True, text=True)
            if r.returncode != 0 or not json.loads(r.stdout)["statistics"]["prefetchFinished"]:
                done = False
        if done:
            return
        time.sleep(0.5)
    raise RuntimeError("the lazy layers' prefetch did not finish")


variants = ["containerd", "containerd-slipway"]
nodes = {}
rows = []
try:
    for variant in variants:
        prepare(variant)
    for variant in variants:
        containerd, _, ref = nodes[variant]
        subprocess.run(containerd.run_args(ref, "warm-up", [], ["/bin/true"]), capture_output=True)
    for run in range(1, args.runs + 1):
        for variant in variants:
            containerd, _, ref = nodes[variant]
            load = load_average()
            t0 = time.time()
            r = subprocess.run(containerd.run_args(ref, f"start-{run}", [], ["/bin/true"]), capture_output=True, text=True)
            rows.append(dict(variant=variant, run=run, seconds=time.time() - t0, ok=r.returncode == 0, load1=load,
                             error=(r.stderr or "").strip()[-200:] if r.returncode else ""))
finally:
    for containerd, snapshotter, _ in nodes.values():
        if containerd:
            containerd.stop()
        if snapshotter:
            snapshotter.stop()

with open(args.out + ".jsonl", "w") as f:
    for row in rows:
        f.write(json.dumps(row) + "\n")
stats = {}
for variant in variants:
    xs = [r["seconds"] for r in rows if r["variant"] == variant and r["ok"]]
    stats[variant] = (statistics.median(xs), statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0, len(xs)) if xs else None
lines = ["# Container start, image already on the node", "",
         f"`ctr run --rm IMAGE NAME /bin/true` of `{args.repo}:{args.tag}` (Slipway: `{args.tag}-esgz`, lazy layers fully "
         f"prefetched), {args.runs} starts per variant, alternating, page caches warm. bench/etl/container-start.py.", "",
         "| variant | starts ok | median s | mean s | sd s |", "|---|---:|---:|---:|---:|"]
for variant in variants:
    s = stats[variant]
    lines.append(f"| {variant} | {s[3]} / {args.runs} | {s[0]:.3f} | {s[1]:.3f} | {s[2]:.3f} |" if s else f"| {variant} | 0 / {args.runs} | – | – | – |")
if stats["containerd"] and stats["containerd-slipway"]:
    ratio = stats["containerd-slipway"][0] / stats["containerd"][0]
    lines += ["", f"containerd + Slipway's snapshotter ÷ containerd (overlayfs), medians: **{ratio:.2f}×** "
                  f"(issue 17's target: at most 1.2× {'✅' if ratio <= 1.2 else '❌'})."]
with open(args.out + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(0 if all(stats.values()) else 1)
