#!/usr/bin/env python3
"""Finishes a benchmark's result rows: RAW.jsonl gets its label fields as numbers (run, image_bytes arrive as
strings from --label), and CSV gets one row per line with the given columns.

    rows_to_csv.py RAW.jsonl OUT.csv COLUMN,COLUMN,...
"""
import csv
import json
import sys

raw, csv_path, columns = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
with open(raw) as f:
    rows = [json.loads(line) for line in f if line.strip()]
for r in rows:
    r["run"] = int(r.get("run", 0))
    r["image_bytes"] = int(r.get("image_bytes", 0) or 0)
with open(raw, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
with open(csv_path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for r in rows:
        writer.writerow([r.get(c, "") for c in columns])
