#!/usr/bin/python3
"""The 3-stage ETL worker of the lazy-vs-full benchmark (runs inside the image, as /app/etl.py).

    python3 /app/etl.py [OUTDIR]          # OUTDIR defaults to /out

Stage 1 (pure Python): parse /app/input.csv with the csv module and aggregate it  -> OUTDIR/cp1
Stage 2: import numpy and pandas, build a dataframe from stage 1, group and describe -> OUTDIR/cp2
Stage 3: read the whole asset /data/asset.bin and hash it (SHA-256)                -> OUTDIR/cp3

Each checkpoint file holds one JSON object whose "t" is time.time() when the stage finished, so a harness
on the host (same clock) gets the time without depending on how often it polls. Files are written to a
temporary name and renamed, so a poller never sees half a file. Nothing is written inside the image: it
may be a read-only lazy mount.
"""
import csv
import hashlib
import json
import os
import sys
import time

OUT = sys.argv[1] if len(sys.argv) > 1 else "/out"
INPUT = "/app/input.csv"
ASSET = "/data/asset.bin"


def checkpoint(n, **info):
    info["t"] = time.time()
    tmp = os.path.join(OUT, f".cp{n}.tmp")
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.rename(tmp, os.path.join(OUT, f"cp{n}"))


# Stage 1: ingestion, standard library only.
totals, counts = {}, {}
rows = 0
with open(INPUT, newline="") as f:
    for row in csv.DictReader(f):
        key = (row["region"], row["product"])
        totals[key] = totals.get(key, 0.0) + float(row["amount"]) * int(row["quantity"])
        counts[key] = counts.get(key, 0) + 1
        rows += 1
checkpoint(1, rows=rows, groups=len(totals))

# Stage 2: the scientific stack.
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

frame = pd.DataFrame(
    [(r, p, totals[(r, p)], counts[(r, p)]) for (r, p) in totals], columns=["region", "product", "revenue", "orders"]
)
frame["mean_order"] = frame["revenue"] / frame["orders"]
by_region = frame.groupby("region").agg(revenue=("revenue", "sum"), orders=("orders", "sum"))
top = by_region.sort_values("revenue", ascending=False).head(3)
spread = float(np.std(frame["mean_order"].to_numpy()))
checkpoint(2, numpy=np.__version__, pandas=pd.__version__, top=list(top.index), spread=round(spread, 3))

# Stage 3: the large asset, every byte.
digest = hashlib.sha256()
size = 0
with open(ASSET, "rb") as f:
    while True:
        block = f.read(1 << 20)
        if not block:
            break
        digest.update(block)
        size += len(block)
checkpoint(3, bytes=size, sha256=digest.hexdigest())
