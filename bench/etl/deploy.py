#!/usr/bin/env python3
"""One deploy of the Patch Tuesday benchmark: bring etl:vN onto the node by one strategy and run its worker;
prints one JSON result row on stdout (and a line on stderr).

    deploy.py --strategy S --ref REG/REPO:vN --version N --node DIR --shared DIR --slipway BIN
              --rx-counter FILE [--cold] [--timeout S] [--label k=v ...]

Strategies (the node's state lives in --node; --cold empties it first, otherwise it is what the previous
deploy left, as on a node that ran the previous release):
  containerd     `ctr image pull` (fetch + unpack into containerd's overlayfs snapshots), `ctr run` (runc);
                 a private containerd whose root is NODE/containerd, started before the clock
  containerd-slipway  the same containerd with Slipway's snapshotter (store NODE/store, started before the clock
                 too): `ctr-remote image rpull --snapshotter slipway` of REF-esgz (eStargz layers mounted lazily,
                 a layer the node has already is not asked for), `ctr run --snapshotter slipway`
  sif-apptainer  what `apptainer build X.sif docker://REF` does: `skopeo copy` into an OCI layout (kept
                 between deploys: skopeo skips blobs it has), `umoci unpack`, `mksquashfs -comp gzip`,
                 `siftool new` + `add`; then the SIF runs with `slipway run --sif` (no Apptainer in Debian 12)
  sif-slipway    `slipway convert --to sif` (layer cache + the native squashfs writer, which copies the blocks
                 of files an earlier SIF in the store has), `slipway run --sif`
  overlay        `slipway run` (pull, layers extracted once into the layer cache, overlayfs over them)
  lazy           `slipway run --mode lazy` of REF-esgz (eStargz, fetched as read, chunk cache in the store)
  index          `slipway run --mode lazy` of REF itself (plain gzip, served through the gzip index its
                 registry, the cluster's `slipway serve --index`, answers as the image's referrer)

The data directory --shared is bind-mounted at /shared (standing in for NFS); the worker writes
/shared/results/vN.json with its own start and end times (same clock as here), which split the deploy into
distribution (start of the deploy until the worker began: fetch, unpack or convert, container set-up) and
run (the worker). Bytes are the rx counter of the node's link to the registry, read before and after.
Caches are dropped before the clock starts.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from benchlib import Containerd, SlipwaySnapshotter, drop_caches, load_average

ap = argparse.ArgumentParser()
ap.add_argument("--strategy", required=True, choices=["containerd", "containerd-slipway", "sif-apptainer", "sif-slipway", "overlay", "lazy", "lazy-profile", "index"])
ap.add_argument("--ref", required=True)
ap.add_argument("--version", type=int, required=True)
ap.add_argument("--node", required=True)
ap.add_argument("--shared", required=True)
ap.add_argument("--slipway", required=True)
ap.add_argument("--rx-counter", required=True)
ap.add_argument("--cold", action="store_true")
ap.add_argument("--timeout", type=float, default=900)
ap.add_argument("--label", action="append", default=[])
args = ap.parse_args()

S, node, shared = args.slipway, os.path.abspath(args.node), os.path.abspath(args.shared)
store = os.path.join(node, "store")
worker = ["/usr/bin/python3", "/app/patch_worker.py", "/shared"]
row = dict(kv.split("=", 1) for kv in args.label)
row.update(bench="patch-tuesday", strategy=args.strategy, cache="cold" if args.cold else "warm", version=args.version,
           ref=args.ref, ok=False, error="")


class StepFailed(Exception):
    pass


def step(name, cmd, deadline):
    """Runs one command of the deploy; its output goes to NODE/log (the last lines make the error)."""
    with open(os.path.join(node, "log"), "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        try:
            r = subprocess.run(cmd, stdout=log, stderr=log, timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            raise StepFailed(f"{name}: timed out after {args.timeout:.0f} s")
    if r.returncode != 0:
        with open(os.path.join(node, "log")) as f:
            tail = f.read().strip().splitlines()[-4:]
        raise StepFailed(f"{name} exited {r.returncode}: " + " | ".join(tail)[-400:])


def deploy(deadline, containerd):
    """Runs the strategy's commands; returns when the worker's container has exited."""
    version = f"v{args.version}"
    bind = ["--bind", f"{shared}:/shared"]
    if args.strategy in ("containerd", "containerd-slipway"):
        ref = args.ref + ("-esgz" if containerd.snapshotter else "")
        step(containerd.pull_args(ref)[0] + " pull", containerd.pull_args(ref), deadline)
        step("ctr run", containerd.run_args(ref, f"etl-{version}", [(shared, "/shared")]), deadline)
    elif args.strategy == "sif-apptainer":
        layout, bundle, sqfs, sif = (os.path.join(node, n) for n in ("layout", "bundle", "rootfs.sqfs", "image.sif"))
        step("skopeo copy", ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{args.ref}", f"oci:{layout}:{version}"], deadline)
        step("umoci unpack", ["umoci", "unpack", "--image", f"{layout}:{version}", bundle], deadline)
        step("mksquashfs", ["mksquashfs", os.path.join(bundle, "rootfs"), sqfs, "-noappend", "-comp", "gzip", "-quiet", "-no-progress"], deadline)
        step("siftool new", ["siftool", "new", sif], deadline)
        step("siftool add", ["siftool", "add", "--datatype", "4", "--parttype", "2", "--partfs", "1", "--partarch", "2",
                             "--groupid", "1", sif, sqfs], deadline)
        # siftool's SIF has no image config (Apptainer runs its runscript), so the command is given in full.
        step("slipway run --sif", [S, "run", "-q", "--store", store, "--sif", sif, *bind, "--", *worker], deadline)
    elif args.strategy == "sif-slipway":
        sif = os.path.join(node, "image.sif")
        step("slipway convert --to sif", [S, "convert", "-q", "--plain-http", "--store", store, args.ref, sif, "--to", "sif"], deadline)
        step("slipway run --sif", [S, "run", "-q", "--store", store, "--sif", sif, *bind], deadline)
    elif args.strategy == "overlay":
        step("slipway run", [S, "run", "-q", "--plain-http", "--store", store, *bind, args.ref], deadline)
    elif args.strategy in ("lazy", "lazy-profile"):
        step("slipway run --mode lazy", [S, "run", "-q", "--plain-http", "--mode", "lazy", "--store", store, *bind,
                                         args.ref + "-esgz"], deadline)
    elif args.strategy == "index":
        step("slipway run --mode lazy", [S, "run", "-q", "--plain-http", "--mode", "lazy", "--store", store, *bind, args.ref], deadline)


def forget_conversion_outputs():
    """The Apptainer path keeps only its OCI layout between deploys (as `apptainer build` keeps its cache)."""
    for name in ("bundle", "rootfs.sqfs", "image.sif"):
        path = os.path.join(node, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)


def rx_bytes():
    with open(args.rx_counter) as f:
        return int(f.read())


def record_profile(deadline):
    """lazy-profile: an untimed run on "another node" (its own store) records the image's start-up profile, which
    this node's store then holds, as a store shared by the cluster would; nothing else of that run is kept."""
    other = os.path.join(node + "-recorder", "store")
    shutil.rmtree(os.path.dirname(other), ignore_errors=True)
    step("record the start-up profile", [S, "run", "-q", "--plain-http", "--mode", "lazy", "--prefetch", "none", "--store", other,
                                         "--bind", f"{shared}:/shared", args.ref + "-esgz"], deadline)
    shutil.copytree(os.path.join(other, "profiles"), os.path.join(store, "profiles"), dirs_exist_ok=True)
    shutil.rmtree(os.path.dirname(other), ignore_errors=True)


if args.cold:
    shutil.rmtree(node, ignore_errors=True)
os.makedirs(node, exist_ok=True)
if args.strategy == "lazy-profile":
    record_profile(time.time() + args.timeout)
forget_conversion_outputs()
open(os.path.join(node, "log"), "w").close()
result_path = os.path.join(shared, "results", f"v{args.version}.json")
if os.path.exists(result_path):
    os.remove(result_path)
row["load1"] = load_average()

containerd = snapshotter = None
try:
    if args.strategy == "containerd-slipway":
        snapshotter = SlipwaySnapshotter(S, node, store)
    if args.strategy.startswith("containerd"):
        containerd = Containerd(node, snapshotter)
    drop_caches()
    rx0 = rx_bytes()
    t0 = time.time()
    deploy(t0 + args.timeout, containerd)
    row["t_total"] = time.time() - t0
    row["bytes"] = rx_bytes() - rx0
    with open(result_path) as f:
        result = json.load(f)
    if result.get("version") != f"v{args.version}":
        raise StepFailed(f"the worker ran version {result.get('version')!r}, not v{args.version}")
    row.update(t_dist=result["t_start"] - t0, t_run=result["t_end"] - result["t_start"], rows=result["rows"], ok=True)
except StepFailed as failure:
    row["error"] = str(failure)
except (OSError, ValueError, KeyError, RuntimeError) as failure:
    row["error"] = f"{type(failure).__name__}: {failure}"
finally:
    if containerd:
        containerd.stop()
    if snapshotter:
        snapshotter.stop()
    forget_conversion_outputs()

print(json.dumps(row), flush=True)
fmt = lambda k: f"{row[k]:6.2f}" if isinstance(row.get(k), float) else "     -"
print(f"  {row.get('link', ''):>7} {row['strategy']:>13} {row['cache']:>4} v{args.version} run {row.get('run', '')}: "
      f"dist {fmt('t_dist')} s run {fmt('t_run')} s total {fmt('t_total')} s, {row.get('bytes', 0) / 1e6:8.3f} MB"
      + (f" | FAILED: {row['error']}" if row["error"] else ""), file=sys.stderr, flush=True)
sys.exit(0 if row["ok"] else 1)
