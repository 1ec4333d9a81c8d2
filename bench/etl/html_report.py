#!/usr/bin/env python3
"""Turn benchmark result rows into one self-contained report.html and a terminal summary.

    bench/etl/html_report.py RESULTS_DIR [--out RESULTS_DIR/report.html] [--summary-only]

Reads whichever of RESULTS_DIR/patch-tuesday.jsonl, lazy-vs-full.jsonl and scale.jsonl exist, plus the optional
patch-tuesday-meta.json, lazy-vs-full-meta.json, lazy-vs-full-images.json and scale-meta.json. The page has inline CSS and SVG
charts drawn here by hand, so it opens offline, without JavaScript, and can be mailed as one file.
Python 3 standard library only. Exit status: 0 on success, 2 on a usage error or when there is nothing to read.
"""
import argparse
import datetime
import math
import os
import sys

import scale_report
from reportkit import (WIDTH, avg, chart_start, colour, esc, failed_mark, failed_rows, fmt_bytes, fmt_msd, fmt_pct,
                       fmt_ratio, group_stats, html_table, load_json, load_jsonl, marker, mean_of, meta_html, nice_ticks, num,
                       ordered, prepare, ratio, sd_of, slots, text_table, vlabel, whisker, x_group_labels, y_axis)

STRATEGIES = {"containerd": "containerd (ctr pull + run)",
              "containerd-slipway": "containerd + Slipway's snapshotter (rpull + run, lazy)",
              "sif-apptainer": "Apptainer path: skopeo + umoci + mksquashfs + siftool, run SIF",
              "sif-slipway": "Slipway: convert --to sif, run SIF",
              "overlay": "Slipway: layer cache + overlay",
              "lazy": "Slipway: lazy mount (eStargz)",
              "lazy-profile": "Slipway: lazy mount (eStargz) with a start-up profile",
              "index": "Slipway: lazy mount (plain gzip + cache-built index)"}
VARIANTS = {"full": "full pull + unpack",
            "containerd": "containerd full pull (ctr pull + run)",
            "containerd-slipway": "containerd + Slipway's snapshotter (lazy)",
            "esgz-none": "eStargz lazy (no prefetch)",
            "opt-landmark": "eStargz optimized (landmark prefetch)",
            "esgz-all": "eStargz lazy + Slipway prefetch all",
            "esgz-profile": "eStargz lazy + the image's start-up profile",
            "opt-all": "eStargz optimized + Slipway prefetch all",
            "index": "plain gzip + gzip index (built by the cache), prefetch all",
            "index-opt": "plain gzip + pushed gzip index with prioritized files, prefetch all",
            "containerd-stargz": "containerd + stargz-snapshotter"}
SLIPWAY_STRATEGIES = ("sif-slipway", "overlay", "lazy", "lazy-profile", "index")
BASELINE = "sif-apptainer"                  # the path Slipway's strategies are compared with
PT_KEYS = ("link", "cache", "strategy", "version")
LVF_KEYS = ("net", "size", "variant")
CHECKPOINTS = ("cp1", "cp2", "cp3")
CP_COLOURS = ("#9ECAE1", "#4292C6", "#08306B")  # CP1..CP3: one hue, darker with time, readable without hue


# --- charts -----------------------------------------------------------------------------------------------


def strategy_items(strategies):
    return [(STRATEGIES.get(s, s), colour(s, STRATEGIES, strategies), "rect") for s in strategies]


def pt_bars(svg, cells, strategies, versions, left, right, bottom, draw, axis_title):
    """Lay out one bar per (version, strategy); draw(x, bar_width, stats, colour, name) paints an ok group.
    Groups with no ok run get the red marker instead. Returns the chart's height."""
    pos, bw, gw = slots(versions, strategies, left, right)
    for (v, s), x in pos.items():
        st = cells.get((v, s))
        if st and st["n_ok"] == 0:
            failed_mark(svg, x, bottom - 4)
        elif st:
            draw(x, bw, st, colour(s, STRATEGIES, strategies), f"{STRATEGIES.get(s, s)}, {vlabel(v)}")
    y = x_group_labels(svg, versions, vlabel, left, gw, bottom + 18)
    svg.text((left + right) / 2, y + 10, axis_title, 12, "middle", "#333")
    return y + 22


def chart_runtime(stats, link, cache, strategies, versions, uid):
    items = strategy_items(strategies) + [("solid: distribution (t_dist)", "#777", "rect"),
                                          ("hatched: workload (t_run)", f"url(#{uid}-h0)", "rect")]
    svg, top = chart_start(uid, f"Runtime breakdown — link {link}, {cache}",
                           "seconds from start: distribution + conversion + setup, then the workload; whiskers ±1 sd", items)
    svg.hatch("#777")   # first pattern, so it gets the id the legend's grey swatch refers to
    left, right, bottom = 70, WIDTH - 20, top + 290
    cells = {(v, s): stats.get((link, cache, s, v)) for v in versions for s in strategies}
    tops = [(mean_of(st, "t_dist") or 0) + (mean_of(st, "t_run") or 0) + sd_of(st, "t_stack")
            for st in cells.values() if st and st["n_ok"]]
    ticks = nice_ticks(max(tops, default=1) * 1.04)
    to_y = lambda v: bottom - v / ticks[-1] * (bottom - top)
    y_axis(svg, ticks, to_y, left, right, top, bottom, "{:g}".format, "seconds")

    def draw(x, bw, st, c, name):
        d, r = mean_of(st, "t_dist") or 0.0, mean_of(st, "t_run") or 0.0
        tip = f"{name}: dist {d:.2f} s + run {r:.2f} s ({st['n_ok']}/{st['n']} ok)"
        svg.rect(x - bw / 2 + 1, to_y(d), bw - 2, bottom - to_y(d), c, tip)
        svg.rect(x - bw / 2 + 1, to_y(d + r), bw - 2, to_y(d) - to_y(d + r), svg.hatch(c), tip, stroke=c)
        sd_d, sd_t = sd_of(st, "t_dist"), sd_of(st, "t_stack")
        whisker(svg, x - bw / 6, to_y(d - sd_d), to_y(d + sd_d))   # offset so it does not merge with the total's
        whisker(svg, x, to_y(d + r - sd_t), to_y(d + r + sd_t))
    note = "  (warm v1 = cold v1: the node starts empty)" if cache == "warm" else ""
    height = pt_bars(svg, cells, strategies, versions, left, right, bottom, draw, "image version" + note)
    return svg.render(height, f"runtime breakdown, link {link}, {cache}")


def chart_bytes(stats, link, cache, strategies, versions, uid):
    svg, top = chart_start(uid, f"Bytes moved per deploy — link {link}, {cache}",
                           "bytes over the registry link, log scale (0 B is drawn at 1 B); whiskers ±1 sd",
                           strategy_items(strategies))
    left, right, bottom = 70, WIDTH - 20, top + 300
    cells = {(v, s): stats.get((link, cache, s, v)) for v in versions for s in strategies}
    highs = [(mean_of(st, "bytes") or 0) + sd_of(st, "bytes") for st in cells.values() if st and st["n_ok"]]
    # The axis ends where the tallest bar still leaves ~52 px for its rotated value label, not at a decade.
    span = max(1.0, math.log10(max(max(highs, default=1), 1)) / (1 - 52 / (bottom - top)))
    to_y = lambda b: bottom - math.log10(max(b, 1)) / span * (bottom - top)
    y_axis(svg, [10 ** e for e in range(int(span) + 1)], to_y, left, right, top, bottom,
           lambda t: fmt_bytes(t).replace(".0 ", " "), "bytes (log)")

    def draw(x, bw, st, c, name):
        b, sd = mean_of(st, "bytes"), sd_of(st, "bytes")
        if b is None:
            return
        svg.rect(x - bw / 2 + 1, to_y(b), bw - 2, bottom - to_y(b), c, f"{name}: {fmt_bytes(b)}")
        if b < 1:   # zero height on a log axis: a thick stroke on the baseline keeps it visible
            svg.line(x - bw / 2 + 1, bottom - 1, x + bw / 2 - 1, bottom - 1, c, 3)
        whisker(svg, x, to_y(max(b - sd, 1)), to_y(b + sd))
        svg.text(x + 4, to_y(b + sd) - 4, fmt_bytes(b) if b >= 1 else "0 B", 10, "start", "#333", rotate=True)
    height = pt_bars(svg, cells, strategies, versions, left, right, bottom, draw, "image version")
    return svg.render(height, f"bytes moved, link {link}, {cache}")


def chart_timeline(stats, net, size, variants, all_variants, uid):
    items = [("ready (mount returned / unpack done)", "#666", "ring"), ("CP1", "#666", "circle"),
             ("CP2", "#666", "square"), ("CP3", "#666", "diamond")]
    svg, top = chart_start(uid, f"Checkpoint timeline — {net}, {size}",
                           "mean seconds from start to each workload checkpoint; whiskers ±1 sd", items)
    left, right, row_h = 290, WIDTH - 75, 40
    bottom = top + row_h * len(variants) + 8    # room for the last row's lower labels
    ends = [(mean_of(st, f) or 0) + sd_of(st, f) for v in variants for st in [stats.get((net, size, v))]
            for f in CHECKPOINTS + ("t_ready",) if st]
    ticks = nice_ticks(max(ends, default=1) * 1.02, 6)
    to_x = lambda t: left + t / ticks[-1] * (right - left)
    for t in ticks:
        svg.line(to_x(t), top, to_x(t), bottom, "#e4e4e4")
        svg.text(to_x(t), bottom + 16, "{:g}".format(t), 11, "middle", "#333")
    svg.line(left, top, left, bottom)
    svg.line(left, bottom, right, bottom)
    svg.text((left + right) / 2, bottom + 36, "seconds from start", 12, "middle", "#333")
    for i, v in enumerate(variants):
        y, st, c = top + row_h * (i + 0.5), stats.get((net, size, v)), colour(v, VARIANTS, all_variants)
        svg.text(left - 10, y + 4, VARIANTS.get(v, v), 12, "end")
        if st and st["n_ok"] == 0:
            failed_mark(svg, left + 8, y + 4, rotate=False)
        if not st or st["n_ok"] == 0:
            continue
        cps = [(name.upper(), mean_of(st, name), sd_of(st, name), shape) for name, shape in
               zip(CHECKPOINTS, ("circle", "square", "diamond")) if mean_of(st, name) is not None]
        end = max([m for _, m, _, _ in cps] + [0.0])
        svg.line(to_x(0), y, to_x(end), y, c, 3)
        if mean_of(st, "t_ready") is not None:
            marker(svg, to_x(mean_of(st, "t_ready")), y, "ring", c)
        taken = {"above": [], "below": []}    # label extents already used, to avoid overlapping text
        for label, m, sd, shape in cps:
            whisker(svg, y, to_x(m - sd), to_x(m + sd), horizontal=True)
            marker(svg, to_x(m), y, shape, c)
            x0, x1 = to_x(m) - 10, to_x(m) + 10
            for side, ty in (("above", y - 9), ("below", y + 18)):
                if all(x1 < a or x0 > b for a, b in taken[side]):
                    taken[side].append((x0, x1))
                    svg.text(to_x(m), ty, label, 10, "middle", "#333")
                    break
        reach = max([m + sd for _, m, sd, _ in cps] + [0.0])
        svg.text(max(to_x(end) + 10, to_x(reach) + 5), y + 4, f"{end:.2f} s", 11, "start", "#222")
    return svg.render(bottom + 50, f"checkpoint timeline, {net}, {size}")


def chart_fetched(stats, net, size, variants, uid):
    items = [(f"CP{i + 1}", CP_COLOURS[i], "rect") for i in range(3)]
    svg, top = chart_start(uid, f"Bytes fetched by each checkpoint — {net}, {size}",
                           "MB (10^6 B) transferred from the registry when the checkpoint was reached; whiskers ±1 sd", items)
    left, right, bottom = 70, WIDTH - 20, top + 260
    fields = tuple(f"bytes_{cp}" for cp in CHECKPOINTS)
    highs = [((mean_of(st, f) or 0) + sd_of(st, f)) / 1e6 for v in variants for st in [stats.get((net, size, v))] if st for f in fields]
    ticks = nice_ticks(max(highs, default=1) * 1.04)
    to_y = lambda mb: bottom - mb / ticks[-1] * (bottom - top)
    y_axis(svg, ticks, to_y, left, right, top, bottom, "{:g}".format, "MB")
    pos, bw, gw = slots(variants, fields, left, right, gap=0.3)
    for (v, f), x in pos.items():
        st = stats.get((net, size, v))
        if st and st["n_ok"] == 0 and f == fields[1]:
            failed_mark(svg, x, bottom - 4)
        b = mean_of(st, f) if st and st["n_ok"] else None
        if b is None:
            continue
        mb, sd = b / 1e6, sd_of(st, f) / 1e6
        svg.rect(x - bw / 2 + 1, to_y(mb), bw - 2, bottom - to_y(mb), CP_COLOURS[fields.index(f)],
                 f"{VARIANTS.get(v, v)}, {f[6:].upper()}: {mb:.1f} MB")
        whisker(svg, x, to_y(max(mb - sd, 0)), to_y(mb + sd))
    y = x_group_labels(svg, variants, lambda v: VARIANTS.get(v, v), left, gw, bottom + 18, 11)
    return svg.render(y + 8, f"bytes fetched, {net}, {size}")


# --- tables -----------------------------------------------------------------------------------------------


def pt_ratios(stats, link, cache, s, v):
    """(t_dist / the Apptainer path's for the same link, cache and version; bytes as % of this strategy's v1)."""
    st = stats.get((link, cache, s, v))
    base = stats.get((link, cache, BASELINE, v))
    v1 = mean_of(stats.get((link, "cold", s, 1)), "bytes")
    if v1 is None:   # warm v1 is a cold deploy too
        v1 = mean_of(stats.get((link, "warm", s, 1)), "bytes")
    pct = ratio(mean_of(st, "bytes"), v1)
    return ratio(mean_of(st, "t_dist"), mean_of(base, "t_dist")), None if pct is None else pct * 100


def pt_table(stats, link, cache, strategies, versions):
    head = ["strategy", "version", "ok / runs", "t_dist s", "t_run s", "t_total s", "bytes", "dist ÷ Apptainer"]
    head += ["bytes % of cold v1"] if cache == "warm" else []
    rows = []
    for s in strategies:
        for v in versions:
            st = stats.get((link, cache, s, v))
            if st is None:
                continue
            dist_r, pct = pt_ratios(stats, link, cache, s, v)
            row = [STRATEGIES.get(s, s), vlabel(v), f"{st['n_ok']} / {st['n']}", fmt_msd(st, "t_dist"), fmt_msd(st, "t_run"),
                   fmt_msd(st, "t_total"), fmt_msd(st, "bytes", fmt_bytes), fmt_ratio(dist_r)]
            rows.append(row + ([fmt_pct(pct)] if cache == "warm" else []))
    return html_table(head, rows, 2, merge_first=True)


def lvf_ratio(stats, net, size, v, cp):
    return ratio(mean_of(stats.get((net, size, v)), cp), mean_of(stats.get((net, size, "full")), cp))


def lvf_time_table(stats, net, size, variants):
    head = ["variant", "ok / runs", "ready s", "CP1 s", "CP2 s", "CP3 s", "CP1 ÷ full", "CP3 ÷ full"]
    rows = [[VARIANTS.get(v, v), f"{st['n_ok']} / {st['n']}", fmt_msd(st, "t_ready"), *(fmt_msd(st, cp) for cp in CHECKPOINTS),
             fmt_ratio(lvf_ratio(stats, net, size, v, "cp1")), fmt_ratio(lvf_ratio(stats, net, size, v, "cp3"))]
            for v in variants for st in [stats[(net, size, v)]]]
    return html_table(head, rows)


def lvf_bytes_table(stats, net, size, variants, images):
    """MB at each checkpoint; % of the image when lazy-vs-full-images.json knows the variant's tag."""
    mb, rows = lambda b: f"{b / 1e6:.1f}", []
    for v in variants:
        st = stats[(net, size, v)]
        pct = ratio(mean_of(st, "bytes_cp3"), num(images.get(st["tag"]), "bytes"))
        rows.append([VARIANTS.get(v, v), *(fmt_msd(st, f"bytes_{k}", mb) for k in CHECKPOINTS + ("end",))]
                    + ([fmt_pct(None if pct is None else pct * 100)] if images else []))
    return html_table(["variant", "MB at CP1", "MB at CP2", "MB at CP3", "MB at end"] + (["CP3 % of image"] if images else []), rows)


# --- headlines --------------------------------------------------------------------------------------------
def pt_headlines(stats, links, strategies, versions):
    lines, later = [], [v for v in versions if isinstance(v, int) and v >= 2]
    span = (f"v{later[0]}..v{later[-1]}" if len(later) > 1 else f"v{later[0]}") if later else "v2+"
    for link in links:
        base = avg(mean_of(stats.get((link, "warm", BASELINE, v)), "t_dist") for v in later)
        for s in (s for s in strategies if s in SLIPWAY_STRATEGIES):
            cells = [stats.get((link, "warm", s, v)) for v in later]
            b, d = avg(mean_of(c, "bytes") for c in cells), avg(mean_of(c, "t_dist") for c in cells)
            v1 = mean_of(stats.get((link, "cold", s, 1)), "bytes") or mean_of(stats.get((link, "warm", s, 1)), "bytes")
            parts = []
            if ratio(b, v1) is not None:
                parts.append(f"moves {fmt_pct(b / v1 * 100)} of v1's bytes ({fmt_bytes(b)} of {fmt_bytes(v1)})")
            if ratio(d, base) is not None:
                parts.append(f"takes {fmt_ratio(d / base)} the Apptainer path's distribution time ({d:.2f} s vs {base:.2f} s)")
            if parts:
                lines.append(f"link {link}, {STRATEGIES.get(s, s)}: redeploy (warm {span} mean) " + " and ".join(parts))
    return lines


def lvf_headlines(stats, nets, sizes, variants):
    lines = []
    for net in nets:
        present = [z for z in sizes if mean_of(stats.get((net, z, "full")), "cp3") is not None]   # a ratio needs full
        if not present:
            continue
        size = "large" if "large" in present else present[-1]
        full = stats[(net, size, "full")]
        lazy = [v for v in variants if v != "full" and not v.startswith("containerd")
                and mean_of(stats.get((net, size, v)), "cp3") is not None]
        if mean_of(full, "cp3") is None or not lazy:
            continue
        best = min(lazy, key=lambda v: mean_of(stats[(net, size, v)], "cp3"))   # best = first to finish the workload
        b = stats[(net, size, best)]
        secs = lambda st, cp: "–" if mean_of(st, cp) is None else f"{mean_of(st, cp):.2f} s"
        line = (f"{net}, {size}: best lazy variant, {VARIANTS.get(best, best)}, reaches CP1 in "
                f"{fmt_ratio(lvf_ratio(stats, net, size, best, 'cp1'))} and CP3 in {fmt_ratio(lvf_ratio(stats, net, size, best, 'cp3'))} "
                f"of the full pull's time (CP1 {secs(b, 'cp1')} vs {secs(full, 'cp1')}, CP3 {secs(b, 'cp3')} vs {secs(full, 'cp3')})")
        snapshotter, containerd = stats.get((net, size, "containerd-slipway")), stats.get((net, size, "containerd"))
        if mean_of(snapshotter, "cp3") is not None and mean_of(containerd, "cp3") is not None:
            line += (f"; containerd + Slipway's snapshotter reaches CP1 in "
                     f"{fmt_ratio(ratio(mean_of(snapshotter, 'cp1'), mean_of(containerd, 'cp1')))} and CP3 in "
                     f"{fmt_ratio(ratio(mean_of(snapshotter, 'cp3'), mean_of(containerd, 'cp3')))} of containerd's (overlayfs)")
        index, optimized = stats.get((net, size, "index")), stats.get((net, size, "opt-all"))
        if mean_of(index, "cp3") is not None:
            line += (f"; the unconverted image through its gzip index reaches CP1 in {fmt_ratio(lvf_ratio(stats, net, size, 'index', 'cp1'))} "
                     f"and CP3 in {fmt_ratio(lvf_ratio(stats, net, size, 'index', 'cp3'))} of the full pull's")
            if mean_of(optimized, "cp3") is not None:
                line += (f" ({fmt_ratio(ratio(mean_of(index, 'cp1'), mean_of(optimized, 'cp1')))} and "
                         f"{fmt_ratio(ratio(mean_of(index, 'cp3'), mean_of(optimized, 'cp3')))} of optimized eStargz's)")
        lines.append(line)
    return lines


# --- page ---------------------------------------------------------------------------------------------------
CSS = """
body{margin:0;background:#f6f7f9;color:#1d2330;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
main{max-width:960px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:21px;margin:40px 0 8px;border-bottom:2px solid #e3e6eb;padding-bottom:4px}
h3{font-size:17px;margin:28px 0 8px}.muted{color:#5b6475}nav a{margin-right:14px}
svg{display:block;max-width:100%;height:auto;margin:12px 0;border:1px solid #e3e6eb;border-radius:4px}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
.headline{background:#eef4fb;border-left:4px solid #0072B2;padding:8px 16px 8px 32px;margin:12px 0}
.headline li{margin:4px 0}.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0 18px;font-variant-numeric:tabular-nums}
th,td{padding:4px 8px;border-bottom:1px solid #e6e8ec;vertical-align:top}th{background:#f0f2f5;text-align:left;font-weight:600}
td.n,th.n{text-align:right;white-space:nowrap}th.n{white-space:normal}td.g{background:#fff;font-weight:600;max-width:230px}
tr.first td{border-top:2px solid #d5d9e0}td.failed{color:#C62828;font-weight:600}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0}dl.meta dt{color:#5b6475}dl.meta dd{margin:0}
code{background:#f0f2f5;padding:1px 4px;border-radius:3px}
"""

PT_INTRO = ("The ETL worker redeployed v1..vN, where only one small file changes between versions, by each strategy. "
            "<b>cold</b>: an empty node store for every deploy. <b>warm</b>: the node keeps its store from deploying the "
            "previous version, so warm v1 is a cold deploy and v2 onwards show what a redeploy costs. "
            "<b>t_dist</b>: start until the workload began (image distribution, conversion and container setup); "
            "<b>t_run</b>: the workload itself; <b>bytes</b>: what crossed the registry link for that deploy.")
LVF_INTRO = ("Each run is cold. Times are seconds from the start of the pull or mount to each checkpoint of the 3-stage "
             "ETL worker (CP1: CSV ingestion; CP2: <code>import numpy, pandas</code> and a dataframe; CP3: a hash of the whole "
             "data asset). Bytes are compressed bytes fetched from the registry by the time each checkpoint was seen.")


def render_html(ctx):
    pt, lvf, sc = ctx["pt"], ctx["lvf"], ctx["scale"]
    out = [f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
           f'<title>Slipway benchmark report</title><style>{CSS}</style></head><body><main>',
           "<h1>Slipway benchmark report</h1>",
           f'<p class="muted">From <code>{esc(ctx["dir"])}</code>, generated {esc(ctx["now"])}. Means ± sample standard '
           "deviation over successful runs only; failed runs are listed, never averaged. 1 KB = 10^3 B, 1 MB = 10^6 B.</p>",
           "<nav>" + "".join(f'<a href="#{i}">{t}</a>' for i, t, on in (("headline", "Headlines", True), ("pt", "Patch Tuesday", pt),
                                                                          ("lvf", "Lazy vs full", lvf), ("scale", "Scale", sc),
                                                                          ("failed", "Failed runs", True)) if on) + "</nav>",
           '<h2 id="headline">Headlines</h2>']
    heads = ctx["headlines"]
    out.append('<ul class="headline">' + "".join(f"<li>{esc(h)}</li>" for h in heads) + "</ul>" if heads
               else '<p class="muted">Not enough successful runs for a headline.</p>')
    uid = iter(range(10 ** 6))
    if pt:
        out += ['<h2 id="pt">Patch Tuesday: redeploying a new version</h2>', f"<p>{PT_INTRO}</p>"]
        if ctx["pt_image_bytes"]:
            out.append(f'<p class="muted">v1 image: {esc(fmt_bytes(ctx["pt_image_bytes"]))} compressed.</p>')
        for link in pt["links"]:
            for cache in pt["caches"]:
                if not any(k[0] == link and k[1] == cache for k in pt["stats"]):
                    continue
                args = (pt["stats"], link, cache, pt["strategies"], pt["versions"])
                out += [f"<h3>link {esc(link)} · {esc(cache)}</h3>", chart_runtime(*args, f"c{next(uid)}"),
                        chart_bytes(*args, f"c{next(uid)}"), pt_table(*args)]
        out += ["<h3>How this was measured</h3>", meta_html(pt["meta"])]
    if lvf:
        out += ['<h2 id="lvf">Lazy mount vs full pull</h2>', f"<p>{LVF_INTRO}</p>"]
        for net in lvf["nets"]:
            for size in lvf["sizes"]:
                variants = [v for v in lvf["variants"] if (net, size, v) in lvf["stats"]]
                if not variants:
                    continue
                out += [f"<h3>{esc(net)} · {esc(size)}</h3>",
                        chart_timeline(lvf["stats"], net, size, variants, lvf["variants"], f"c{next(uid)}"),
                        lvf_time_table(lvf["stats"], net, size, variants),
                        chart_fetched(lvf["stats"], net, size, variants, f"c{next(uid)}"),
                        lvf_bytes_table(lvf["stats"], net, size, variants, lvf["images"])]
        out += ["<h3>How this was measured</h3>", meta_html(lvf["meta"])]
    if sc:
        out += scale_report.section(sc, lambda: next(uid))
        out += ["<h3>How this was measured</h3>", meta_html(sc["meta"])]
    out.append('<h2 id="failed">Failed runs</h2>')
    out.append(html_table(["bench", "group", "run", "error"], ctx["failed"], 4) if ctx["failed"]
               else '<p class="muted">None: every run succeeded.</p>')
    if ctx["warnings"]:
        out.append("<h3>Input warnings</h3><ul>" + "".join(f"<li>{esc(w)}</li>" for w in ctx["warnings"]) + "</ul>")
    return "\n".join(out) + "\n</main></body></html>\n"


# --- terminal summary -------------------------------------------------------------------------------------


def pt_cell(st):
    """'dist+run bytes' for one version, e.g. '4.0+3.0 75.0M'; '*' when some runs failed."""
    if st is None or st["n_ok"] == 0:
        return "-" if st is None else "failed"
    d, r, b = mean_of(st, "t_dist"), mean_of(st, "t_run"), mean_of(st, "bytes")
    t = "?" if d is None or r is None else f"{d:.1f}+{r:.1f}"
    return f"{t} {'-' if b is None else fmt_bytes(b, True)}" + ("*" if st["n_ok"] < st["n"] else "")


def summary(ctx):
    out, pt, lvf = [], ctx["pt"], ctx["lvf"]
    if pt:
        rows = []
        for link in pt["links"]:
            for cache in pt["caches"]:
                for s in pt["strategies"]:
                    cells = [pt["stats"].get((link, cache, s, v)) for v in pt["versions"]]
                    if any(cells):
                        rows.append([link, cache, s] + [pt_cell(c) for c in cells])
        out += ["Patch Tuesday: mean dist+run seconds and bytes moved per version (* = some runs failed)",
                text_table(["link", "cache", "strategy"] + [vlabel(v) for v in pt["versions"]], rows, 3), ""]
    if lvf:
        rows, f2 = [], lambda v: "-" if v is None else f"{v:.2f}"
        for net in lvf["nets"]:
            for size in lvf["sizes"]:
                for v in lvf["variants"]:
                    st = lvf["stats"].get((net, size, v))
                    if st is None:
                        continue
                    if st["n_ok"] == 0:
                        rows.append([net, size, v, f"0/{st['n']}"] + ["failed"] + ["-"] * 5)
                        continue
                    b3 = mean_of(st, "bytes_cp3")
                    rows.append([net, size, v, f"{st['n_ok']}/{st['n']}"] + [f2(mean_of(st, cp)) for cp in CHECKPOINTS]
                                + ["-" if b3 is None else f"{b3 / 1e6:.1f}"]
                                + [fmt_ratio(lvf_ratio(lvf["stats"], net, size, v, cp)) for cp in ("cp1", "cp3")])
        out += ["Lazy vs full: mean seconds to each checkpoint, MB fetched by CP3, ratio to full",
                text_table(["net", "size", "variant", "ok", "cp1 s", "cp2 s", "cp3 s", "MB@cp3", "cp1÷full", "cp3÷full"], rows, 3), ""]
    if ctx["scale"]:
        out += scale_report.summary(ctx["scale"])
    out += ["Headlines:"] + [f"  - {h}" for h in ctx["headlines"] or ["(not enough successful runs)"]]
    if ctx["failed"]:
        out.append(f"Failed runs: {len(ctx['failed'])} (listed in the report)")
    return "\n".join(out)


# --- main -------------------------------------------------------------------------------------------------
def build_context(results_dir, warnings):
    path = lambda name: os.path.join(results_dir, name)
    ctx = {"dir": results_dir, "pt": None, "lvf": None, "scale": None, "failed": [], "headlines": [], "warnings": warnings,
           "now": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "pt_image_bytes": None}
    if os.path.exists(path("patch-tuesday.jsonl")):
        rows = prepare(load_jsonl(path("patch-tuesday.jsonl"), warnings), PT_KEYS)
        strategies = ordered((r["strategy"] for r in rows), tuple(STRATEGIES))
        ctx["pt"] = pt = {"stats": group_stats(rows, PT_KEYS, ("t_dist", "t_run", "t_total", "t_stack", "bytes")),
                          "links": ordered(r["link"] for r in rows), "caches": ordered((r["cache"] for r in rows), ("cold", "warm")),
                          "strategies": strategies, "versions": ordered(r["version"] for r in rows),
                          "meta": load_json(path("patch-tuesday-meta.json"), warnings)}
        ctx["pt_image_bytes"] = next((num(r, "image_bytes") for r in rows if num(r, "image_bytes")), None)
        ctx["failed"] += failed_rows("patch-tuesday", rows, PT_KEYS)
        ctx["headlines"] += pt_headlines(pt["stats"], pt["links"], strategies, pt["versions"])
    if os.path.exists(path("lazy-vs-full.jsonl")):
        rows = prepare(load_jsonl(path("lazy-vs-full.jsonl"), warnings), LVF_KEYS)
        fields = ("t_ready",) + CHECKPOINTS + tuple(f"bytes_{k}" for k in CHECKPOINTS + ("end",))
        ctx["lvf"] = lvf = {"stats": group_stats(rows, LVF_KEYS, fields), "nets": ordered(r["net"] for r in rows),
                            "sizes": ordered((r["size"] for r in rows), ("small", "medium", "large")),
                            "variants": ordered((r["variant"] for r in rows), tuple(VARIANTS)),
                            "images": load_json(path("lazy-vs-full-images.json"), warnings),
                            "meta": load_json(path("lazy-vs-full-meta.json"), warnings)}
        ctx["failed"] += failed_rows("lazy-vs-full", rows, LVF_KEYS)
        ctx["headlines"] += lvf_headlines(lvf["stats"], lvf["nets"], lvf["sizes"], lvf["variants"])
    if os.path.exists(path("scale.jsonl")):
        ctx["scale"] = sc = scale_report.context(results_dir, warnings)
        ctx["failed"] += sc["failed"]
        ctx["headlines"] += scale_report.headlines(sc)
    return ctx


def main(argv=None):
    p = argparse.ArgumentParser(description="Render patch-tuesday.jsonl, lazy-vs-full.jsonl and scale.jsonl as report.html plus a terminal summary.")
    p.add_argument("results_dir", metavar="RESULTS_DIR")
    p.add_argument("--out", help="HTML file to write [RESULTS_DIR/report.html]")
    p.add_argument("--summary-only", action="store_true", help="print the terminal summary, write no HTML")
    args = p.parse_args(argv)
    d = args.results_dir
    if not os.path.isdir(d):
        print(f"html_report: {d} is not a directory", file=sys.stderr)
        return 2
    if not any(os.path.isfile(os.path.join(d, n)) for n in ("patch-tuesday.jsonl", "lazy-vs-full.jsonl", "scale.jsonl")):
        print(f"html_report: {d} has none of patch-tuesday.jsonl, lazy-vs-full.jsonl, scale.jsonl; nothing to report", file=sys.stderr)
        return 2
    warnings = []
    try:
        ctx = build_context(d, warnings)
    except OSError as e:
        print(f"html_report: {e}", file=sys.stderr)
        return 2
    out = None if args.summary_only else args.out or os.path.join(d, "report.html")
    if out:   # written before printing, so a closed stdout (| head) cannot cost the report
        with open(out, "w", encoding="utf-8") as f:
            f.write(render_html(ctx))
    for w in warnings:
        print(f"html_report: warning: {w}", file=sys.stderr)
    try:
        print(summary(ctx))
        print(f"report: {out}" if out else "report: not written (--summary-only)")
    except BrokenPipeError:
        sys.stderr.close()   # the reader went away; nothing left worth reporting
    return 0


if __name__ == "__main__":
    sys.exit(main())
