#!/usr/bin/env python3
"""Writes a benchmark's metadata (what ran, where, with which peers) as the JSON the reports read.

    write_meta.py OUT.json SLIPWAY_BIN INVOCATION --tools t1,t2,... [--note TEXT ...]
"""
import argparse
import json
import os
import platform
import shutil
import subprocess

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("slipway")
ap.add_argument("invocation")
ap.add_argument("--tools", default="")
ap.add_argument("--note", action="append", default=[])
args = ap.parse_args()


def output(*command):
    try:
        return subprocess.run(command, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


with open(args.out, "w") as f:
    json.dump({
        "invocation": "slipway bench " + args.invocation,
        "date": output("date", "-u", "+%Y-%m-%d %H:%M UTC"),
        "commit": output("git", "rev-parse", "--short", "HEAD"),
        "slipway": output(args.slipway, "--version"),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "peer_tools": {tool: shutil.which(tool) is not None for tool in args.tools.split(",") if tool},
        "notes": args.note,
    }, f, indent=1)
