#!/usr/bin/env python3
"""Measures what a gzip index costs (bench/etl/gzip-index.sh runs it): index size, build CPU against gunzip, and the
pull-through cache's CPU with and without --index. Writes OUT.json (every measurement) and OUT.md (the summary)."""
import argparse
import glob
import json
import os
import shutil
import subprocess
import time
import urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--slipway", required=True)
ap.add_argument("--registry", required=True)
ap.add_argument("--refs", required=True)
ap.add_argument("--cache-ref", required=True)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--scratch", required=True)
ap.add_argument("--out", required=True)
args = ap.parse_args()
S = args.slipway
TICK = os.sysconf("SC_CLK_TCK")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def timed(cmd):
    """Wall seconds and the children's CPU seconds (user + system) of a command."""
    before, start = os.times(), time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = os.times()
    return time.monotonic() - start, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def process_cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def metrics(url):
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and not line.startswith("#")}


result = {"size": [], "build": [], "cache": []}

# --- size and build ---------------------------------------------------------------------------------------
for ref in args.refs.split(","):
    store = os.path.join(args.scratch, "index-store")
    shutil.rmtree(store, ignore_errors=True)
    image = f"{args.registry}/{ref}"
    sh([S, "pull", "-q", "--plain-http", "--store", store, image])
    subprocess.run(["sync"])
    open("/proc/sys/vm/drop_caches", "w").write("3\n")
    wall, cpu = timed([S, "index", "-q", "--plain-http", "--store", store, image])
    summary = json.loads(sh([S, "index", "--json", "--plain-http", "--store", store, image]).stdout)
    gunzip_wall = gunzip_cpu = 0.0
    for layer in summary["layers"]:
        blob = os.path.join(store, "blobs", "sha256", layer["digest"].split(":")[1])
        w, c = timed(["sh", "-c", f"gzip -dc {blob} >/dev/null"])
        gunzip_wall += w
        gunzip_cpu += c
        result["size"].append({"ref": ref, "layer": layer["digest"], "layer_bytes": layer["size"], "index_bytes": layer["indexSize"],
                               "files": layer["files"], "checkpoints": layer["checkpoints"]})
    layer_bytes = sum(layer["size"] for layer in summary["layers"])
    result["build"].append({"ref": ref, "layers": len(summary["layers"]), "layer_bytes": layer_bytes, "index_wall": wall, "index_cpu": cpu,
                            "gunzip_wall": gunzip_wall, "gunzip_cpu": gunzip_cpu})
    print(f"{ref}: index {wall:.2f} s wall, {cpu:.2f} s CPU; gzip -dc {gunzip_wall:.2f} s wall, {gunzip_cpu:.2f} s CPU", flush=True)

# --- the cache's CPU with and without --index ------------------------------------------------------------
for run in range(1, args.runs + 1):
    for mode in ("plain", "index"):
        root, node = os.path.join(args.scratch, f"cache-{mode}"), os.path.join(args.scratch, "node")
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(node, ignore_errors=True)
        subprocess.run(["sync"])
        open("/proc/sys/vm/drop_caches", "w").write("3\n")
        port = 5392
        server = subprocess.Popen([S, "serve", "--upstream", f"http://{args.registry}", "--listen", f"127.0.0.1:{port}", "--root", root]
                                  + (["--index"] if mode == "index" else []), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/v2/")
                break
            except OSError:
                time.sleep(0.05)
        cpu0, start = process_cpu(server.pid), time.monotonic()
        sh([S, "pull", "-q", "--plain-http", "--store", node, f"127.0.0.1:{port}/{args.cache_ref}"])
        pulled = time.monotonic() - start
        while True:
            m = metrics(url)
            if m.get("slipway_cache_gzip_index_builds_in_flight", 0) == 0 and m.get("slipway_cache_fills_in_flight", 0) == 0:
                break
            time.sleep(0.05)
        settled = time.monotonic() - start
        cpu = process_cpu(server.pid) - cpu0
        server.terminate()
        server.wait()
        row = {"run": run, "mode": mode, "cpu": cpu, "pull_wall": pulled, "settled_wall": settled,
               "upstream_bytes": m.get("slipway_cache_upstream_bytes_total", 0), "indexes": m.get("slipway_cache_gzip_indexes_built_total", 0)}
        result["cache"].append(row)
        print(f"cache run {run} {mode}: {cpu:.2f} s CPU, pull {pulled:.2f} s, settled {settled:.2f} s, {row['indexes']:.0f} indexes", flush=True)

json.dump(result, open(args.out + ".json", "w"), indent=1)

# --- summary ----------------------------------------------------------------------------------------------
mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
lines = ["# Gzip index cost", "", "Index size per layer (target: at most 2 % of the compressed layer, for layers of 1 MB and more; "
         "a smaller layer's index is a few hundred bytes):", "",
         "| image | layer | layer MB | files | checkpoints | index kB | index / layer |", "|---|---|---:|---:|---:|---:|---:|"]
for r in result["size"]:
    share = 100 * r["index_bytes"] / r["layer_bytes"]
    lines.append(f"| {r['ref']} | {r['layer'][7:19]} | {r['layer_bytes'] / 1e6:.1f} | {r['files']} | {r['checkpoints']} | "
                 f"{r['index_bytes'] / 1e3:.1f} | {share:.2f} % {('✅' if share <= 2 else '❌') if r['layer_bytes'] >= 1e6 else ''} |")
lines += ["", "Building with `slipway index` (layers in the store, page cache dropped) against `gzip -dc >/dev/null` of the same layers:", "",
          "| image | layer MB | index wall s | index CPU s | gunzip wall s | gunzip CPU s | index CPU / gunzip CPU |", "|---|---:|---:|---:|---:|---:|---:|"]
for r in result["build"]:
    lines.append(f"| {r['ref']} | {r['layer_bytes'] / 1e6:.1f} | {r['index_wall']:.2f} | {r['index_cpu']:.2f} | {r['gunzip_wall']:.2f} | "
                 f"{r['gunzip_cpu']:.2f} | {r['index_cpu'] / r['gunzip_cpu']:.2f}× |")
plain = [r["cpu"] for r in result["cache"] if r["mode"] == "plain"]
index = [r["cpu"] for r in result["cache"] if r["mode"] == "index"]
extra = mean(index) / mean(plain) - 1
lines += ["", f"The cache's CPU while a fresh node pulls {args.cache_ref} through it ({args.runs} runs each, alternated; target: "
          f"at most 10 % more with --index):", "",
          "| mode | CPU s (mean) | runs | pull wall s (mean) |", "|---|---:|---|---:|",
          f"| serve | {mean(plain):.2f} | {', '.join(f'{x:.2f}' for x in plain)} | {mean([r['pull_wall'] for r in result['cache'] if r['mode'] == 'plain']):.2f} |",
          f"| serve --index | {mean(index):.2f} | {', '.join(f'{x:.2f}' for x in index)} | {mean([r['pull_wall'] for r in result['cache'] if r['mode'] == 'index']):.2f} |",
          "", f"--index costs {100 * extra:+.0f} % CPU {'✅' if extra <= 0.10 else '❌'}."]
open(args.out + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
