#!/usr/bin/env python3
"""One cold run of the lazy-vs-full benchmark; prints one JSON object (a result row) on stdout.

    measure.py --variant full|lazy|containerd|containerd-slipway --prefetch none|landmark|all --ref REF --slipway BIN --dir DIR
               [--plain-http] [--rx-counter FILE] [--follow-prefetch] [--timeout S] [--label k=v ...]

Cold: DIR/store (the content and chunk store) and DIR/rootfs are new, and the page, dentry and inode caches
are dropped (sync; echo 3 > /proc/sys/vm/drop_caches) just before the clock starts.

full        t0, `slipway unpack REF DIR/rootfs`, then the worker chrooted in DIR/rootfs.
containerd  a private containerd (root in DIR, started before t0); t0, `ctr image pull` (fetch and unpack into
            overlayfs snapshots), then the worker in `ctr run` (runc) with DIR/out bound at /out.
containerd-slipway  the same containerd with Slipway's snapshotter (`slipway snapshotter --prefetch P`, store in
            DIR/store, started before t0 too); t0, `ctr-remote image rpull --snapshotter slipway` (eStargz layers
            mounted lazily: only their TOCs move), then the worker in `ctr run --snapshotter slipway`.
lazy  t0, `slipway mount --prefetch P REF DIR/mnt` (returns when the mount is live), then the worker in the
      mount. Bytes are sampled with `slipway status --json` as soon as each checkpoint file appears (the
      out directory is polled every 20 ms), and the final figures come from `slipway umount --json`.
      With --follow-prefetch, after CP3 the run waits (up to --timeout) for the background prefetch to end
      and reports when the whole image was local (t_all_local).

With --rx-counter (the node's link to the registry), bytes at each checkpoint are what crossed the link, for
every variant alike (link_bytes_cpN, link_bytes_end); the bytes_* figures are Slipway's own accounting.

Checkpoint times are taken from the checkpoint files themselves (the worker's time.time() at the end of each
stage, same clock as t0), so polling does not add to them.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

from benchlib import Containerd, SlipwaySnapshotter, drop_caches, load_average

HERE = os.path.dirname(os.path.abspath(__file__))

ap = argparse.ArgumentParser()
ap.add_argument("--variant", choices=["full", "lazy", "containerd", "containerd-slipway"], required=True)
ap.add_argument("--prefetch", choices=["none", "landmark", "all"], default="all")
ap.add_argument("--ref", required=True)
ap.add_argument("--slipway", required=True)
ap.add_argument("--dir", required=True)
ap.add_argument("--plain-http", action="store_true")
ap.add_argument("--rx-counter")
ap.add_argument("--follow-prefetch", action="store_true")
ap.add_argument("--profile", help="lazy: a file of paths (one per line) kept in the fresh store as the image's start-up profile")
ap.add_argument("--timeout", type=float, default=900)
ap.add_argument("--label", action="append", default=[])
args = ap.parse_args()

S = args.slipway
store = os.path.join(args.dir, "store")
rootfs = os.path.join(args.dir, "rootfs")
mnt = os.path.join(args.dir, "mnt")
out = os.path.join(args.dir, "out")
plain = ["--plain-http"] if args.plain_http else []
row = dict(kv.split("=", 1) for kv in args.label)
uses_containerd = args.variant.startswith("containerd")
row.update(ref=args.ref, mode=args.variant, prefetch=args.prefetch if args.variant in ("lazy", "containerd-slipway") else "", ok=False, error="")


def sh(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def is_mountpoint(path):
    return subprocess.run(["mountpoint", "-q", path]).returncode == 0


def reset():
    if is_mountpoint(mnt):
        sh([S, "umount", "--store", store, mnt])
    for path in (store, rootfs, out, os.path.join(args.dir, "containerd"), os.path.join(args.dir, "containerd-state")):
        shutil.rmtree(path, ignore_errors=True)
    os.makedirs(mnt, exist_ok=True)
    os.makedirs(out)


def status():
    r = sh([S, "status", "--json", "--store", store, mnt])
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)["statistics"]


def link_bytes():
    if not args.rx_counter:
        return None
    with open(args.rx_counter) as f:
        return int(f.read())


def finish(code=0):
    print(json.dumps(row), flush=True)
    num = lambda k, scale=1, w=6: f"{row[k] / scale:{w}.{1 if scale > 1 else 2}f}" if isinstance(row.get(k), (int, float)) else " " * (w - 1) + "-"
    mib = lambda k: num(k, 2**20, 7)
    line = (f"  {row.get('net', ''):>8} {row.get('size', ''):>5} {row.get('variant', ''):>12} run {row.get('run', '')}: ready {num('t_ready')}"
            f" CP1 {num('cp1')} CP2 {num('cp2')} CP3 {num('cp3')} s | MiB {mib('bytes_cp1')} {mib('bytes_cp2')} {mib('bytes_cp3')}"
            f" end {mib('bytes_end')}")
    if "t_all_local" in row:
        line += f" | all local {num('t_all_local')} s"
    if row.get("error"):
        line += f" | FAILED: {row['error']}"
    print(line, file=sys.stderr, flush=True)
    sys.exit(code)


def keep_profile(paths_file):
    """The image's start-up profile in the fresh store, as a first run on any node sharing the store leaves it
    (StartupProfile: the manifest digest it was recorded for, and the paths in first-access order)."""
    r = subprocess.run([S, "inspect", "--raw", *plain, args.ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        row["error"] = "inspect: " + r.stderr.decode(errors="replace").strip()[-300:]
        finish(1)
    digest = "sha256:" + hashlib.sha256(r.stdout).hexdigest()
    with open(paths_file) as f:
        files = [line.strip() for line in f if line.strip()]
    directory = os.path.join(store, "profiles", "sha256")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, digest.split(":")[1] + ".json"), "w") as f:
        json.dump({"image": digest, "files": files}, f)


reset()
if args.profile:
    keep_profile(args.profile)
row["load1"] = load_average()
containerd = snapshotter = None
if uses_containerd:
    try:
        if args.variant == "containerd-slipway":
            snapshotter = SlipwaySnapshotter(S, os.path.abspath(args.dir), os.path.abspath(store), args.prefetch, args.plain_http)
        containerd = Containerd(os.path.abspath(args.dir), snapshotter)
    except RuntimeError as failure:
        if snapshotter:
            snapshotter.stop()
        row["error"] = str(failure)
        finish(1)
drop_caches()

rx0 = link_bytes()
t0 = time.time()
if uses_containerd:
    r = sh(containerd.pull_args(args.ref, args.plain_http))
    row["t_ready"] = time.time() - t0
    if r.returncode != 0:
        containerd.stop()
        if snapshotter:
            snapshotter.stop()
        row["error"] = f"{containerd.pull_args(args.ref)[0]} pull: " + (r.stderr or r.stdout).strip()[-300:]
        finish(1)
    pulled = link_bytes() - rx0 if rx0 is not None else None
elif args.variant == "full":
    r = sh([S, "unpack", "-q", "--json", "--store", store, *plain, args.ref, rootfs])
    row["t_ready"] = time.time() - t0
    if r.returncode != 0:
        row["error"] = "unpack: " + r.stderr.strip()[-300:]
        finish(1)
    pulled = json.loads(r.stdout)["pull"]["bytesTransferred"]
    root = rootfs
else:
    r = sh([S, "mount", "-q", "--store", store, *plain, "--prefetch", args.prefetch, args.ref, mnt])
    row["t_ready"] = time.time() - t0
    if r.returncode != 0:
        row["error"] = "mount: " + r.stderr.strip()[-300:]
        finish(1)
    root = mnt

log_path = os.path.join(args.dir, "worker.log")
if containerd:
    command = containerd.run_args(args.ref, "etl", [(os.path.abspath(out), "/out")], ["/usr/bin/python3", "/app/etl.py", "/out"])
else:
    command = [os.path.join(HERE, "run-workload.sh"), root, out]
with open(log_path, "w") as log:
    worker = subprocess.Popen(command, stdout=log, stderr=log)
seen = {}
while True:
    for n in (1, 2, 3):
        if n not in seen and os.path.exists(os.path.join(out, f"cp{n}")):
            t_seen = time.time() - t0
            seen[n] = (t_seen, status() if args.variant == "lazy" else None, link_bytes())
    if worker.poll() is not None and len(seen) == 3 or worker.returncode not in (None, 0):
        break
    if time.time() - t0 > args.timeout:
        worker.kill()
        worker.wait()
        row["error"] = f"timeout after {args.timeout:.0f} s"
        break
    time.sleep(0.02)
worker.wait()
if worker.returncode != 0 and not row["error"]:
    with open(log_path) as f:
        row["error"] = f"worker exit {worker.returncode}: " + f.read().strip()[-300:]

for n in (1, 2, 3):
    path = os.path.join(out, f"cp{n}")
    if not os.path.exists(path):
        continue
    with open(path) as f:
        cp = json.load(f)
    row[f"cp{n}"] = cp["t"] - t0
    row[f"seen{n}"] = seen.get(n, (None,))[0]
    stats = seen.get(n, (None, None))[1]
    if rx0 is not None and n in seen:
        row[f"link_bytes_cp{n}"] = seen[n][2] - rx0
    if args.variant in ("full", "containerd"):
        row[f"bytes_cp{n}"] = pulled
    elif args.variant == "containerd-slipway":
        row[f"bytes_cp{n}"] = row.get(f"link_bytes_cp{n}")
    elif stats:
        row[f"bytes_cp{n}"] = stats["bytesFetched"]
        row[f"requests_cp{n}"] = stats["requests"]
        row[f"blocking_cp{n}"] = stats["blockingReads"]
    if n == 3:
        row["asset_sha256"] = cp.get("sha256")

if containerd:
    containerd.stop()
if snapshotter:
    snapshotter.stop()
if rx0 is not None:
    row["link_bytes_end"] = link_bytes() - rx0
if args.variant in ("full", "containerd"):
    row["bytes_end"] = pulled
elif args.variant == "containerd-slipway":
    row["bytes_end"] = row.get("link_bytes_end")
else:
    if args.follow_prefetch and args.prefetch == "all" and not row["error"]:
        while time.time() - t0 < args.timeout:
            stats = status()
            if stats is None or stats["prefetchFinished"]:
                row["t_all_local"] = time.time() - t0
                break
            time.sleep(0.1)
    r = sh([S, "umount", "--json", "--store", store, mnt])
    if r.returncode == 0 and r.stdout.strip():
        final = json.loads(r.stdout)["statistics"]
        row.update(bytes_end=final["bytesFetched"], requests_end=final["requests"], blocking_end=final["blockingReads"],
                   failed_reads=final["failedReads"], chunks_end=final["chunksFetched"], prefetch_done=final["prefetchDone"],
                   prefetch_total=final["prefetchTotal"], toc_bytes=final["tocBytesFetched"])
    elif not row["error"]:
        row["error"] = "umount: " + r.stderr.strip()[-300:]
row["ok"] = not row["error"] and all(f"cp{n}" in row for n in (1, 2, 3))
shutil.rmtree(store, ignore_errors=True)
shutil.rmtree(rootfs, ignore_errors=True)
finish(0 if row["ok"] else 1)
