#!/usr/bin/python3
"""The Patch Tuesday ETL worker (runs inside the etl:vN images, as /app/patch_worker.py).

    python3 /app/patch_worker.py [SHARED]        # SHARED defaults to /shared

It reads the data shards SHARED/data/shard-*.csv (a host directory bind-mounted into the container, standing in
for the cluster's NFS), aggregates them with pandas, hashes every shard, and writes SHARED/results/vN.json.
The result holds time.time() when the worker began and when it ended, so the harness on the host (same clock)
splits a deploy into distribution (until the worker began) and execution without trusting its own polling.
The image's version comes from /version.txt, the one file that changes between releases.
As a Slurm task (SLURM_PROCID passed in, e.g. `srun slipway run --env SLURM_PROCID --env SLURMD_NODENAME ...`)
it writes SHARED/results/vN.task-RANK.json instead, with its rank and node, so every node's result is kept.
"""
import glob
import hashlib
import json
import os
import sys
import time
import uuid

t_start = time.time()
SHARED = sys.argv[1] if len(sys.argv) > 1 else "/shared"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

with open("/version.txt") as f:
    version = f.read().strip()

shards = sorted(glob.glob(os.path.join(SHARED, "data", "shard-*.csv")))
if not shards:
    sys.exit(f"no data shards in {SHARED}/data (expected shard-*.csv)")
digests = {}
frames = []
for path in shards:
    with open(path, "rb") as f:
        digests[os.path.basename(path)] = hashlib.sha256(f.read()).hexdigest()
    frames.append(pd.read_csv(path))
data = pd.concat(frames, ignore_index=True)
data["revenue"] = data["amount"] * data["quantity"]
by_region = data.groupby("region")["revenue"].agg(["sum", "mean", "count"]).sort_values("sum", ascending=False)
summary = {
    "version": version,
    "rows": int(len(data)),
    "shards": digests,
    "top_regions": list(by_region.index[:3]),
    "revenue_total": round(float(data["revenue"].sum()), 2),
    "revenue_p99": round(float(np.percentile(data["revenue"].to_numpy(), 99)), 2),
}
rank = os.environ.get("SLURM_PROCID")
name = f"{version}.json"
if rank is not None:
    summary.update(task=int(rank), node=os.environ.get("SLURMD_NODENAME", ""))
    name = f"{version}.task-{rank}.json"
summary["t_start"] = t_start
summary["t_end"] = time.time()
results = os.path.join(SHARED, "results")
os.makedirs(results, exist_ok=True)
# Every node of a job writes here at once: a temporary name of its own, then one atomic rename.
tmp = os.path.join(results, f".{version}.{uuid.uuid4().hex}.tmp")
with open(tmp, "w") as f:
    json.dump(summary, f)
os.rename(tmp, os.path.join(results, name))
print(f"{version}: {summary['rows']} rows from {len(shards)} shards, top {summary['top_regions']}")
