#!/usr/bin/env python3
"""Turns bench/cache-server.sh's CSV (scenario,server,metric,value) into bench/results/cache-server.md.

    cache_server_report.py CSV MD FACTS [PROBLEMS_FILE] [--clients N] [--wrk "wrk ..."]

FACTS is markdown (the machine/version bullet list) put under the title; PROBLEMS_FILE holds one problem a line.
The markdown is also printed.
"""
import argparse
import csv
import statistics
from collections import defaultdict

p = argparse.ArgumentParser()
p.add_argument("csv")
p.add_argument("md")
p.add_argument("facts")
p.add_argument("problems", nargs="?")
p.add_argument("--clients", default="32")
p.add_argument("--wrk", default="wrk")
a = p.parse_args()

data = defaultdict(dict)  # (scenario, server) -> metric -> value
for r in csv.DictReader(open(a.csv)):
    data[(r["scenario"], r["server"])][r["metric"]] = r["value"]


def get(scenario, server, metric):
    v = data.get((scenario, server), {}).get(metric)
    return None if v in (None, "") else float(v)


def runs(scenario, server, prefix):
    return [float(v) for m, v in sorted(data.get((scenario, server), {}).items()) if m.startswith(prefix + "_run")]


def fmt(v, digits=2):
    return "–" if v is None else f"{v:.{digits}f}"


def mean_sd(xs):
    if not xs:
        return "–"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.2f}"


def ratio(x, y, digits=2):
    return "–" if x is None or not y else f"{x / y:.{digits}f}"


big = get("setup", "upstream", "big_blob_bytes")
small = get("setup", "upstream", "small_blob_bytes")
servers = ["slipway", "distribution"]

lines = [f"# Pull-through cache: slipway serve vs docker-registry (distribution) proxy", "", a.facts, ""]

# 1. concurrent cold clients
lines += [
    f"## {a.clients} concurrent cold clients, one {int(big or 0)}-byte blob",
    "",
    f"{a.clients} parallel `curl -f BLOB_URL | openssl dgst -sha256` started at once on a cache just restarted with an empty "
    "root. Upstream bytes = the upstream registry's own log (GET blob/manifest bytes written during the scenario). "
    "\"direct\" = the same clients straight against the upstream, for reference.",
    "",
    "| server | clients ok (sha256) | wall s (all finished) | per client mean / max s | upstream bytes | upstream / blob | slipway /metrics upstream bytes |",
    "|---|---|---|---|---|---|---|",
]
for s in servers + ["direct"]:
    if (("concurrent", s)) not in data:
        continue
    ok, n = get("concurrent", s, "clients_ok"), get("concurrent", s, "clients")
    up = get("concurrent", s, "upstream_bytes")
    mb = get("concurrent", s, "metrics_upstream_bytes")
    lines.append(
        f"| {s} | {fmt(ok, 0)}/{fmt(n, 0)} | {fmt(get('concurrent', s, 'wall_seconds'))} "
        f"| {fmt(get('concurrent', s, 'client_seconds_mean'))} / {fmt(get('concurrent', s, 'client_seconds_max'))} "
        f"| {fmt(up, 0)} | {ratio(up, big, 3) if s != 'direct' else '(' + ratio(up, big, 3) + ')'} "
        f"| {fmt(mb, 0) if s == 'slipway' else ''} |")

if ("concurrent", "slipway") in data:
    c = data[("concurrent", "slipway")]
    names = [("metrics_blob_misses", "blob misses"), ("metrics_fills_started", "upstream fills started"),
             ("metrics_blob_fill_joins", "requests that joined a running fill"), ("metrics_blob_hits", "blob hits"),
             ("metrics_fills_failed", "fills failed"), ("metrics_upstream_errors", "upstream errors")]
    shown = [f"{label} {c[m]}" for m, label in names if m in c]
    if shown:
        lines += ["", "slipway's own counters after this scenario: " + ", ".join(shown) + "."]

# 2. pulls
direct = runs("direct_pull", "direct", "seconds")
dmean = statistics.mean(direct) if direct else None
lines += [
    "",
    "## Image pull with skopeo (cold cache, warm cache, direct)",
    "",
    "`skopeo copy --src-tls-verify=false --dest-oci-accept-uncompressed-layers docker://127.0.0.1:PORT/bench/big:1 oci:OUT:1`, "
    "fresh OUT and dropped page cache before each; cold = cache restarted with an empty root before the pull; "
    "warm = the same pull again right after. Ratios are mean / mean of the direct pull.",
    "",
    "| server | cold s (mean ± sd) | cold / direct | cold upstream bytes (mean) | warm s (mean ± sd) | warm / direct | warm upstream bytes (mean) | runs ok (cold, warm) |",
    "|---|---|---|---|---|---|---|---|",
]
for s in servers:
    cold, warm = runs("cold_pull", s, "seconds"), runs("warm_pull", s, "seconds")
    cu, wu = runs("cold_pull", s, "upstream_bytes"), runs("warm_pull", s, "upstream_bytes")
    lines.append(
        f"| {s} | {mean_sd(cold)} | {ratio(statistics.mean(cold) if cold else None, dmean)} "
        f"| {fmt(statistics.mean(cu) if cu else None, 0)} | {mean_sd(warm)} "
        f"| {ratio(statistics.mean(warm) if warm else None, dmean)} | {fmt(statistics.mean(wu) if wu else None, 0)} "
        f"| {len(cold)}, {len(warm)} |")
du = runs("direct_pull", "direct", "upstream_bytes")
lines.append(f"| direct (upstream) | {mean_sd(direct)} | 1.00 | {fmt(statistics.mean(du) if du else None, 0)} | | | | {len(direct)} |")
lines += ["", "Per run (s): " + "; ".join(
    (f"{sc.split('_')[0]} {s}: " if s != "direct" else "direct: ") + ", ".join(f"{x:.2f}" for x in runs(sc, s, "seconds"))
    for sc, s in [("cold_pull", "slipway"), ("cold_pull", "distribution"), ("warm_pull", "slipway"),
                  ("warm_pull", "distribution"), ("direct_pull", "direct")] if runs(sc, s, "seconds"))]

# 3. throughput
lines += [
    "",
    f"## Warm throughput, one {int(small or 0)}-byte blob",
    "",
    f"`{a.wrk} BLOB_URL` after one warming GET (wrk runs on the same machine and shares its CPUs). "
    "MB/s = requests/s × blob size / 10^6.",
    "",
    "| server | requests/s | MB/s | requests | non-2xx | socket errors | upstream bytes during wrk |",
    "|---|---|---|---|---|---|---|",
]
for s in servers:
    if ("throughput", s) not in data:
        continue
    g = lambda m: get("throughput", s, m)
    lines.append(f"| {s} | {fmt(g('requests_per_s'), 1)} | {fmt(g('mb_per_s'), 1)} | {fmt(g('requests'), 0)} "
                 f"| {fmt(g('non_2xx'), 0)} | {fmt(g('socket_errors'), 0)} | {fmt(g('upstream_bytes'), 0)} |")
lines.append(f"| slipway / distribution | {ratio(get('throughput', 'slipway', 'requests_per_s'), get('throughput', 'distribution', 'requests_per_s'))} "
             f"| {ratio(get('throughput', 'slipway', 'mb_per_s'), get('throughput', 'distribution', 'mb_per_s'))} | | | | |")

problems = [l.strip() for l in open(a.problems)] if a.problems else []
problems = [l for l in problems if l]
lines += ["", "## Problems", ""]
lines += [f"- {l}" for l in problems] if problems else ["None: every client and pull verified its sha256, both caches ran to the end."]
lines += ["", "All figures: cache-server.csv (scenario,server,metric,value)."]

open(a.md, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
