#!/usr/bin/env python3
"""bench/results/sif-convert.md from bench/sif-convert.sh's CSV: cold conversions side by side, the squashfs
stage's throughput per core, and the patch release."""
import csv
import os
import platform
import statistics
import sys

rows = list(csv.DictReader(open(sys.argv[1])))
image, next_image, commit = sys.argv[2:5]
cores = os.cpu_count() or 1
TOOLS = [
    ("slipway", "slipway convert --to sif (native writer)"),
    ("slipway-mksquashfs", "slipway convert --to sif --squashfs-tool mksquashfs"),
    ("apptainer-pipeline", "skopeo + umoci + mksquashfs + siftool"),
]


def cold(tool):
    return [r for r in rows if r["tool"] == tool and r["run"] not in ("patch", "cached")]


def mean(values):
    return statistics.mean(values) if values else float("nan")


def sd(values):
    return statistics.stdev(values) if len(values) > 1 else 0.0


tree_bytes = next((int(r["tree_bytes"]) for r in rows if r["tree_bytes"]), 0)
print("# OCI → SIF: Slipway's squashfs writer, mksquashfs, and Apptainer's pipeline\n")
print(f"- image `{image}`, then its patch release `{next_image}`; slipway at {commit}; {cores} cores; kernel {platform.release()}")
print("- every tool compresses with gzip at level 9 on every core; caches dropped before every run; cold runs start from an empty store or layout")
print(f"- the image's root filesystem: {tree_bytes / 1e6:.1f} MB (apparent size, as `umoci unpack` writes it)\n")
print("## Cold conversion\n")
print("| tool | mean ± sd (s) | runs (s) | squashfs stage (s) | MB/s per core | SIF bytes | squashfs bytes | paths |")
print("|---|---|---|---|---|---|---|---|")
summary = {}
for tool, label in TOOLS:
    runs = cold(tool)
    if not runs:
        continue
    seconds = [float(r["seconds"]) for r in runs]
    stage = [float(r["squashfs_seconds"]) for r in runs]
    per_core = tree_bytes / 1e6 / mean(stage) / cores if tree_bytes else float("nan")
    last = runs[-1]
    summary[tool] = (mean(seconds), mean(stage), int(last["sif_bytes"]), int(last["partition_bytes"]), per_core)
    print(
        f"| {label} | {mean(seconds):.2f} ± {sd(seconds):.2f} | {', '.join(f'{x:.2f}' for x in seconds)} | {mean(stage):.2f} | "
        f"{per_core:.1f} | {last['sif_bytes']} | {last['partition_bytes']} | {last['files']} |"
    )
if "slipway" in summary and "apptainer-pipeline" in summary:
    s, a = summary["slipway"], summary["apptainer-pipeline"]
    print(f"\n**Cold: slipway / pipeline = {s[0] / a[0]:.2f}×** (target ≤ 0.5×); squashfs stage {s[1] / a[1]:.2f}× mksquashfs's; "
          f"throughput {s[4] / a[4]:.2f}× mksquashfs's per core; SIF size ratio {s[2] / a[2]:.3f}, squashfs {s[3] / a[3]:.3f}")
if "slipway-mksquashfs" in summary and "apptainer-pipeline" in summary:
    m, a = summary["slipway-mksquashfs"], summary["apptainer-pipeline"]
    print(f"\nWith mksquashfs as its writer, slipway takes {m[0] / a[0]:.2f}× the pipeline's time.")

print("\n## Patch release (only /version.txt changed), after the cold conversion of the previous version\n")
print("| tool | seconds | squashfs stage (s) | bytes compressed | bytes copied from the previous SIF | SIF bytes |")
print("|---|---|---|---|---|---|")
patch = {r["tool"]: r for r in rows if r["run"] == "patch"}
for tool, label in TOOLS:
    if tool in patch:
        r = patch[tool]
        print(f"| {label} | {float(r['seconds']):.2f} | {float(r['squashfs_seconds']):.2f} | {r['bytes_compressed'] or '-'} | {r['bytes_reused'] or '-'} | {r['sif_bytes']} |")
if "slipway" in patch and "apptainer-pipeline" in patch:
    ratio = float(patch["slipway"]["seconds"]) / float(patch["apptainer-pipeline"]["seconds"])
    print(f"\n**Patch release: slipway / pipeline = {ratio:.3f}×**")
cached = [r for r in rows if r["tool"] == "slipway-cached"]
if cached:
    print(f"\nThe same image converted again comes from the store's SIF cache in {float(cached[0]['seconds']):.2f} s.")
