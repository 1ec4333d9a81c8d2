#!/usr/bin/python3
"""Turn the rows of bench/etl/lazy-vs-full.sh into PREFIX.csv and PREFIX.md (the charts are in report.html).

    report.py RAW.jsonl IMAGES.json PREFIX META.json
"""
import csv
import json
import math
import os
import statistics
import sys

raw_path, images_path, prefix, meta_path = sys.argv[1:5]
out_dir, name = os.path.dirname(prefix) or ".", os.path.basename(prefix)
rows = [json.loads(line) for line in open(raw_path) if line.strip()]
images = json.load(open(images_path))
meta = json.load(open(meta_path))
os.makedirs(out_dir, exist_ok=True)

VARIANTS = ["full", "containerd", "containerd-slipway", "esgz-none", "opt-landmark", "esgz-all", "esgz-profile", "opt-all", "index",
            "index-opt"]
DESCRIBE = {
    "full": "`slipway unpack` of the gzip image, then run",
    "containerd": "`ctr image pull` of the gzip image (private containerd, overlayfs snapshots), then `ctr run` (runc)",
    "containerd-slipway": "`ctr-remote image rpull` of the optimized eStargz image through Slipway's snapshotter "
                          "(lazy layers, `--prefetch all`), then `ctr run --snapshotter slipway` (runc)",
    "esgz-none": "`slipway mount --prefetch none` of the eStargz image",
    "opt-landmark": "`slipway mount --prefetch landmark` of the optimized eStargz image",
    "esgz-all": "`slipway mount` (default `--prefetch all`) of the eStargz image",
    "esgz-profile": "the same, with the image's start-up profile in the store (recorded by an earlier run, image not rebuilt)",
    "opt-all": "`slipway mount` (default `--prefetch all`) of the optimized eStargz image",
    "index": "`slipway mount` (default `--prefetch all`) of the plain gzip image through the cluster's cache "
             "(`slipway serve --index`), which indexed its layers while another node pulled it",
    "index-opt": "`slipway mount` (default `--prefetch all`) of the same plain image with an index pushed next to it by "
                 "`slipway index --push --prioritize` (the recorded workload files)",
}
order = lambda v: VARIANTS.index(v) if v in VARIANTS else len(VARIANTS)
nets = list(dict.fromkeys(r["net"] for r in rows))
sizes = list(dict.fromkeys(r["size"] for r in rows))

# --- CSV ------------------------------------------------------------------------------------------------
columns = ["net", "size", "variant", "tag", "run", "ok", "t_ready", "cp1", "cp2", "cp3", "bytes_cp1", "bytes_cp2", "bytes_cp3",
           "bytes_end", "image_bytes", "requests_cp1", "requests_cp2", "requests_cp3", "requests_end", "blocking_end",
           "failed_reads", "toc_bytes", "prefetch_done", "prefetch_total", "t_all_local", "seen1", "seen2", "seen3", "load1", "error"]
with open(prefix + ".csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(columns)
    for r in rows:
        r["image_bytes"] = images.get(r.get("tag", ""), {}).get("bytes")
        w.writerow([(f"{r[c]:.3f}" if isinstance(r.get(c), float) else r.get(c, "")) for c in columns])


# --- tables ---------------------------------------------------------------------------------------------
def values(net, size, variant, key):
    return [r[key] for r in rows if r["net"] == net and r["size"] == size and r["variant"] == variant and r.get("ok")
            and isinstance(r.get(key), (int, float))]


def mean(xs):
    return statistics.fmean(xs) if xs else math.nan


def msd(xs):
    if not xs:
        return "–"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{mean(xs):.2f} ± {sd:.2f}"


def mib(b):
    return f"{b / 2**20:.1f}"


lines = ["# Lazy mount vs full pull: the 3-stage ETL (issue 4)", ""]
lines += [
    f"{meta.get('cores')} cores, {meta.get('mem_gib')} GiB, kernel {meta.get('kernel')}; slipway {meta.get('slipway') or ''} "
    f"(commit {meta.get('commit')}{', Sources/ modified' if meta.get('dirty') else ''}), release build; {meta.get('date')}.",
    f"Command: `{meta.get('invocation')}`.", "",
    "Every run is cold: a new store (content store and chunk cache), `sync; echo 3 > /proc/sys/vm/drop_caches`, then the "
    "clock starts. Times are seconds from the start of `slipway unpack` / `slipway mount` to the end of each stage, taken "
    "from the worker's own timestamps (CP1: pure-Python CSV ingestion; CP2: `import numpy, pandas` and a dataframe; CP3: "
    "SHA-256 of the whole `/data/asset.bin`). Bytes are compressed bytes from the registry: for lazy mounts "
    "`slipway status --json` sampled when each checkpoint file appeared (polled every 20 ms, so a sample may include a "
    "few ms of fetching after the checkpoint); for the full pull, everything `unpack` transferred. “ready” is when "
    "`unpack` finished or `mount` returned; “all local” is when the background prefetch of `--prefetch all` had the "
    "whole image (the run keeps the mount up after CP3 to see it).", "",
    "Links: docker-registry runs in a network namespace behind a veth pair; *none* leaves the link unshaped, a rate "
    "puts a TBF qdisc at that rate on the registry's egress (goodput ≈ 95 % of it). The registry reads its blobs from "
    "disk (caches dropped).", "",
    "Variants:", ""]
present = sorted({r["variant"] for r in rows}, key=order)
lines += [f"- **{v}**: {DESCRIBE.get(v, v)}" for v in present]
lines += ["", "## Images", "", "| tag | compressed | layers (MiB) | prioritized bytes (landmark) |", "|---|---:|---|---:|"]
for tag, info in sorted(images.items()):
    lines.append(f"| `{tag}` | {mib(info['bytes'])} MiB | {' + '.join(mib(l['size']) for l in info['layers'])} | "
                 f"{mib(sum(l['prefetch'] for l in info['layers']))} MiB |")

targets = []
for net in nets:
    for size in sizes:
        sub = [r for r in rows if r["net"] == net and r["size"] == size]
        if not sub:
            continue
        runs = len({r["run"] for r in sub})
        loads = [r["load1"] for r in sub if isinstance(r.get("load1"), (int, float))]
        lines += ["", f"## {size}, {net} ({runs} run{'s' if runs != 1 else ''} each)", ""]
        if loads:
            lines += [f"1-minute load average at the start of the runs: {min(loads):.2f}–{max(loads):.2f}.", ""]
        lines += [
                  "| variant | ready s | CP1 s | CP2 s | CP3 s | CP1 ÷ full | CP2 ÷ full | CP3 ÷ full | MiB at CP1 (% of image) "
                  "| MiB at CP2 | MiB at CP3 | MiB at end | all local s | failed runs |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        full = {k: mean(values(net, size, "full", k)) for k in ("cp1", "cp2", "cp3")}
        for v in sorted({r["variant"] for r in sub}, key=order):
            img = next((images[r["tag"]]["bytes"] for r in sub if r["variant"] == v and r.get("tag") in images), None)
            cells = [f"**{v}**", msd(values(net, size, v, "t_ready"))]
            cells += [msd(values(net, size, v, k)) for k in ("cp1", "cp2", "cp3")]
            for k in ("cp1", "cp2", "cp3"):
                m = mean(values(net, size, v, k))
                cells.append(f"{m / full[k]:.2f}×" if full[k] == full[k] and m == m else "–")
            for k in ("bytes_cp1", "bytes_cp2", "bytes_cp3", "bytes_end"):
                xs = values(net, size, v, k)
                if not xs:
                    cells.append("–")
                    continue
                m = mean(xs)
                cells.append(f"{mib(m)} ({100 * m / img:.1f} %)" if img and k != "bytes_end" else mib(m))
            cells.append(msd(values(net, size, v, "t_all_local")) if values(net, size, v, "t_all_local") else "–")
            failed = [r for r in sub if r["variant"] == v and not r.get("ok")]
            cells.append(f"{len(failed)}: {failed[0].get('error', '')[:80]}" if failed else "0")
            lines.append("| " + " | ".join(cells) + " |")
        # Issue 4's targets, for Slipway's default (prefetch all) on each image.
        for v in ("esgz-all", "esgz-profile", "opt-all", "index", "index-opt"):
            cp1, cp3 = mean(values(net, size, v, "cp1")), mean(values(net, size, v, "cp3"))
            b1 = mean(values(net, size, v, "bytes_cp1"))
            img = images.get(f"{size}{ {'esgz-all': '-esgz', 'esgz-profile': '-esgz', 'opt-all': '-esgz-opt'}.get(v, '')}", {}).get("bytes")
            if cp1 == cp1 and full["cp1"] == full["cp1"]:
                targets.append(f"| {size} | {net} | {v} | {cp1 / full['cp1']:.2f}× {'✅' if cp1 <= 0.1 * full['cp1'] else '❌'} | "
                               f"{cp3 / full['cp3']:.2f}× {'✅' if cp3 <= full['cp3'] else '❌'} | "
                               + (f"{100 * b1 / img:.1f} % {'✅' if b1 < 0.05 * img else '❌'}" if img and b1 == b1 else "–") + " |")
# Issue 17's targets: containerd with Slipway's snapshotter against containerd with its overlayfs snapshotter.
snapshotter_targets = []
for net in nets:
    for size in sizes:
        base1, base3 = mean(values(net, size, "containerd", "cp1")), mean(values(net, size, "containerd", "cp3"))
        cp1, cp3 = mean(values(net, size, "containerd-slipway", "cp1")), mean(values(net, size, "containerd-slipway", "cp3"))
        if cp1 == cp1 and base1 == base1:
            snapshotter_targets.append(
                f"| {size} | {net} | {cp1 / base1:.2f}× {'✅' if cp1 <= 0.1 * base1 else '❌'} | "
                f"{cp3 / base3:.2f}× {'✅' if cp3 <= 0.5 * base3 else '❌'} |")
if snapshotter_targets:
    lines += ["", "## Issue 17's targets, containerd + Slipway's snapshotter ÷ containerd (overlayfs)", "",
              "CP1 at most 0.1× containerd's; CP3 at most 0.5× (the targets are stated for `large` at 1 Gbit/s).", "",
              "| image | network | CP1 ÷ containerd | CP3 ÷ containerd |", "|---|---|---:|---:|"] + snapshotter_targets
if targets:
    lines += ["", "## Issue 4's targets, Slipway's default mount (`--prefetch all`)", "",
              "CP1 at most 0.1× the full pull's; CP3 no later than the full pull's; bytes before CP1 under 5 % of the image.", "",
              "| image | network | variant | CP1 ÷ full | CP3 ÷ full | bytes at CP1 |", "|---|---|---|---:|---:|---:|"] + targets
lines += ["", "## Peers", ""] + [f"- {note}" for note in meta.get("notes", [])]
lines += ["", f"Charts: `report.html`; one row per run: `{name}.csv` (all fields: `{name}.jsonl`).", ""]
with open(prefix + ".md", "w") as f:
    f.write("\n".join(lines))
