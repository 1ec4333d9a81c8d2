"""The scale benchmark's part of the report (scale.jsonl): per link and cache state, line charts against the
node count of the time to the last task's result and of the bytes moved, a table, headlines and the terminal
summary. html_report.py puts it on the page."""
import os

from reportkit import (WIDTH, chart_start, colour, esc, failed_rows, fmt_bytes, fmt_msd, fmt_ratio, group_stats, html_table,
                       load_json, load_jsonl, marker, mean_of, nice_ticks, num, ordered, ratio, text_table, whisker, y_axis)

SCALE_STRATEGIES = {"direct": "each node from the registry, own store",
                    "cache": "each node via the cache server, own store",
                    "shared": "one shared store, via the cache server",
                    "lazy": "lazy mount via the cache, shared store",
                    "plugin": "SPANK plugin (srun --container-image), shared store via the cache"}
SCALE_KEYS = ("link", "cache", "strategy", "nodes")
SCALE_FIELDS = ("t_job_start", "t_first_start", "t_last_start", "t_first_result", "t_median_result", "t_last_result", "t_job_end",
                "upstream_bytes", "cache_upstream_bytes", "node_link_bytes", "cpu_busy", "io_wait",
                "t_result_after_job_start", "t_start_after_job_start", "image_bytes")
TARGET_FACTOR = 1.5   # the target: 16 nodes via the cache within 1.5x the single-node time
SHAPES = ("circle", "square", "diamond", "ring")
INTRO = ("The Patch Tuesday job launched at once on N nodes of a local Slurm cluster, one task per node, each running "
         "the worker in the image through <code>slipway run</code> (the <b>plugin</b> strategy: through Slipway's SPANK plugin, "
         "<code>srun --container-image</code>). <b>cold</b>: v1 onto empty stores and an empty cache "
         "server; <b>warm</b>: v2 right after (only <code>/version.txt</code> changed). Times are seconds from "
         "<code>sbatch</code> until the <b>last</b> task wrote its result (every task's first result) and until the job "
         "ended; Slurm's own scheduling takes 0.1–3 s of that on this cluster, so the last result is also given from "
         "the moment Slurm started the batch step. Upstream bytes crossed the registry host's link; ÷ image is against "
         "one node's cold pull straight from the registry. Node-link bytes are what all N nodes received from the "
         "registry or the cache; the shared directory stands in for NFS and its traffic is not on those links. Every "
         "node is a namespace of one machine, so the nodes share its cores and its disk: <b>cpu busy</b> and "
         "<b>io wait</b> say how much of the machine the launch used and how long it idled on the disk.")


def load(path, warnings):
    rows = load_jsonl(path, warnings)
    for r in rows:
        for k in ("link", "cache", "strategy"):
            r[k] = "?" if r.get(k) is None else str(r[k])
        r["nodes"] = int(num(r, "nodes") or 0)
        if None not in (num(r, "t_last_result"), num(r, "t_job_start")):   # without Slurm's scheduling latency
            r["t_result_after_job_start"] = r["t_last_result"] - r["t_job_start"]
        if None not in (num(r, "t_last_start"), num(r, "t_job_start")):
            r["t_start_after_job_start"] = r["t_last_start"] - r["t_job_start"]
        r["image_bytes"] = num(r, "image_bytes")
    return rows


def context(results_dir, warnings):
    rows = load(os.path.join(results_dir, "scale.jsonl"), warnings)
    stats = group_stats(rows, SCALE_KEYS, SCALE_FIELDS)
    return {"stats": stats, "links": ordered(r["link"] for r in rows),
            "caches": ordered((r["cache"] for r in rows), ("cold", "warm")),
            "strategies": ordered((r["strategy"] for r in rows), tuple(SCALE_STRATEGIES)),
            "nodes": sorted({r["nodes"] for r in rows}),
            "image_bytes": next((num(r, "image_bytes") for r in rows if num(r, "image_bytes")), None),
            "meta": load_json(os.path.join(results_dir, "scale-meta.json"), warnings),
            "failed": failed_rows("scale", rows, SCALE_KEYS)}


def one_image(sc, link):
    """Upstream bytes of one node's cold pull straight from the registry (wire bytes, as the others are); without
    that strategy in the run, the image's compressed size."""
    direct = mean_of(sc["stats"].get((link, "cold", "direct", 1)), "upstream_bytes")
    if direct is not None:
        return direct
    return next((mean_of(st, "image_bytes") for k, st in sc["stats"].items() if k[0] == link and mean_of(st, "image_bytes")), None)


def line_chart(sc, link, cache, field, title, subtitle, y_title, fmt, uid, scale=1.0, target=None):
    """One line per strategy over the node counts (evenly spaced: they double); target = (value, label)."""
    strategies = [s for s in sc["strategies"] if any((link, cache, s, n) in sc["stats"] for n in sc["nodes"])]
    items = [(SCALE_STRATEGIES.get(s, s), colour(s, SCALE_STRATEGIES, strategies), SHAPES[i % len(SHAPES)])
             for i, s in enumerate(strategies)]
    svg, top = chart_start(uid, title, subtitle, items)
    left, right, height = 78, WIDTH - 24, 250
    bottom = top + height
    values = [mean_of(sc["stats"].get((link, cache, s, n)), field) for s in strategies for n in sc["nodes"]]
    vmax = max([v / scale for v in values if v is not None] + ([target[0]] if target else []) + [1e-9])
    ticks = nice_ticks(vmax * 1.05)
    to_y = lambda v: bottom - v / ticks[-1] * height
    y_axis(svg, ticks, to_y, left, right, top, bottom, fmt, y_title)
    step = (right - left) / max(len(sc["nodes"]), 1)
    to_x = {n: left + (i + 0.5) * step for i, n in enumerate(sc["nodes"])}
    for n, x in to_x.items():
        svg.text(x, bottom + 18, str(n), 12, "middle")
    svg.text((left + right) / 2, bottom + 38, "nodes launching at once", 12, "middle", "#333")
    if target:
        y = to_y(target[0])
        svg.parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#888" stroke-dasharray="6 4"/>')
        svg.text(right - 4, y - 5, target[1], 11, "end", "#555")
    for (label, fill, shape), s in zip(items, strategies):
        points = []
        for n in sc["nodes"]:
            st = sc["stats"].get((link, cache, s, n))
            v = mean_of(st, field)
            if v is None:
                continue
            points.append((to_x[n], to_y(v / scale)))
            sd = st[field][1] / scale if st[field][2] > 1 else 0
            whisker(svg, to_x[n], to_y(v / scale - sd), to_y(v / scale + sd))
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            svg.parts.append(f'<polyline points="{path}" fill="none" stroke="{fill}" stroke-width="2"/>')
        for x, y in points:
            marker(svg, x, y, shape, fill)
    return svg.render(bottom + 52, title)


def table(sc, link, cache):
    image = one_image(sc, link)
    secs = lambda st, f: fmt_msd(st, f, lambda v: f"{v:.1f}")
    mb = lambda st, f: fmt_msd(st, f, lambda v: f"{v / 1e6:.1f}")
    rows = []
    for s in sc["strategies"]:
        for n in sc["nodes"]:
            st = sc["stats"].get((link, cache, s, n))
            if st is None:
                continue
            rows.append([SCALE_STRATEGIES.get(s, s), str(n), secs(st, "t_job_start"), secs(st, "t_last_start"), secs(st, "t_last_result"),
                         secs(st, "t_job_end"), secs(st, "t_result_after_job_start"), mb(st, "upstream_bytes"), fmt_ratio(ratio(mean_of(st, "upstream_bytes"), image)),
                         mb(st, "node_link_bytes"), fmt_msd(st, "cpu_busy", lambda v: f"{v * 100:.0f} %"),
                         fmt_msd(st, "io_wait", lambda v: f"{v * 100:.0f} %")])
    return html_table(["strategy", "nodes", "Slurm started the job, s", "last task began, s", "last result, s", "job end, s",
                       "last result after the job started, s", "upstream MB", "÷ image",
                       "node links MB", "cpu busy", "io wait"], rows, 2, merge_first=True)


def section(sc, next_uid):
    out = ['<h2 id="scale">Scale: one job on many nodes</h2>', f"<p>{INTRO}</p>"]
    if sc["image_bytes"]:
        out.append(f'<p class="muted">v1 image: {esc(fmt_bytes(sc["image_bytes"]))} compressed.</p>')
    for link in sc["links"]:
        image = one_image(sc, link)
        for cache in sc["caches"]:
            if not any(k[0] == link and k[1] == cache for k in sc["stats"]):
                continue
            single = mean_of(sc["stats"].get((link, cache, "cache", 1)), "t_last_result")
            target = (single * TARGET_FACTOR, f"{TARGET_FACTOR}× one node via the cache") if single else None
            out += [f"<h3>registry link {esc(link)} · {esc(cache)}</h3>",
                    line_chart(sc, link, cache, "t_last_result", "Time until every task has its first result",
                               f"seconds from sbatch to the last task's result; registry link {link}, {cache}", "seconds",
                               lambda v: f"{v:g}", f"c{next_uid()}", target=target),
                    (line_chart(sc, link, cache, "upstream_bytes", "Bytes from the registry",
                                f"upstream bytes ÷ one node's cold pull ({fmt_bytes(image)}); registry link {link}, {cache}",
                                "÷ one image", lambda v: f"{v:g}×", f"c{next_uid()}", scale=image or 1.0) if cache == "cold" else
                     line_chart(sc, link, cache, "upstream_bytes", "Bytes from the registry",
                                f"upstream KB for the patch release; registry link {link}, {cache}",
                                "KB", lambda v: f"{v:g}", f"c{next_uid()}", scale=1e3)),
                    line_chart(sc, link, cache, "node_link_bytes", "Bytes over the node links",
                               f"sum over the nodes of what their links received, MB; registry link {link}, {cache}",
                               "MB", lambda v: f"{v:g}", f"c{next_uid()}", scale=1e6),
                    table(sc, link, cache)]
    return out


def headlines(sc):
    lines = []
    for link in sc["links"]:
        image, top = one_image(sc, link), max(sc["nodes"], default=0)
        if top < 2:
            continue
        for s in ("shared", "cache", "direct", "lazy"):
            one, many = sc["stats"].get((link, "cold", s, 1)), sc["stats"].get((link, "cold", s, top))
            t1, tn = mean_of(one, "t_last_result"), mean_of(many, "t_last_result")
            j1, jn = mean_of(one, "t_result_after_job_start"), mean_of(many, "t_result_after_job_start")
            if None in (t1, tn):
                continue
            up = ratio(mean_of(many, "upstream_bytes"), image)
            line = (f"registry link {link}, cold, {SCALE_STRATEGIES[s]}: {top} nodes have every result {tn:.1f} s after "
                    f"sbatch, {fmt_ratio(tn / t1)} the single-node {t1:.1f} s")
            if None not in (j1, jn):
                line += f" ({jn:.1f} s after Slurm started the job, {fmt_ratio(jn / j1)} the single-node {j1:.1f} s)"
            lines.append(line + f"; upstream {fmt_ratio(up)} one image")
        lines += plugin_headlines(sc, link, image)
    return lines


def plugin_headlines(sc, link, image):
    """The plugin against `srun slipway run` (shared) at each node count: launch overhead (sbatch to the last task's
    start) and upstream bytes."""
    lines = []
    for cache in ("cold", "warm"):
        for n in sc["nodes"]:
            plugin, run = sc["stats"].get((link, cache, "plugin", n)), sc["stats"].get((link, cache, "shared", n))
            tp, tr = mean_of(plugin, "t_last_start"), mean_of(run, "t_last_start")
            jp, jr = mean_of(plugin, "t_start_after_job_start"), mean_of(run, "t_start_after_job_start")
            if None in (tp, tr):
                continue
            line = (f"registry link {link}, {cache}, {n} node{'s' if n > 1 else ''}: the plugin's last task began {tp:.2f} s after "
                    f"sbatch, srun slipway run's {tr:.2f} s ({fmt_ratio(tp / tr)})")
            if None not in (jp, jr):
                line += f"; {jp:.2f} s against {jr:.2f} s after Slurm started the job ({fmt_ratio(jp / jr)})"
            up = ratio(mean_of(plugin, "upstream_bytes"), image)
            if cache == "cold" and up is not None:
                line += f"; upstream {fmt_ratio(up)} one image"
            lines.append(line)
    return lines


def summary(sc):
    rows = []
    for link in sc["links"]:
        image = one_image(sc, link)
        for cache in sc["caches"]:
            for s in sc["strategies"]:
                for n in sc["nodes"]:
                    st = sc["stats"].get((link, cache, s, n))
                    if st is None:
                        continue
                    if st["n_ok"] == 0:
                        rows.append([link, cache, s, str(n), "failed", "-", "-", "-", "-", "-", "-"])
                        continue
                    f1 = lambda f: "-" if mean_of(st, f) is None else f"{mean_of(st, f):.1f}"
                    rows.append([link, cache, s, str(n), f1("t_last_start"), f1("t_last_result"), f1("t_result_after_job_start"),
                                 f1("t_job_end"),
                                 f"{(mean_of(st, 'upstream_bytes') or 0) / 1e6:.1f}",
                                 fmt_ratio(ratio(mean_of(st, "upstream_bytes"), image)),
                                 f"{(mean_of(st, 'node_link_bytes') or 0) / 1e6:.1f}"])
    return ["Scale: seconds from sbatch to the last task's start and result (and from Slurm's start of the job to it) "
            "and to the job's end; upstream ÷ one image",
            text_table(["link", "cache", "strategy", "nodes", "start s", "result s", "job→result s", "end s", "upstream MB", "÷ image", "node MB"],
                       rows, 4), ""]
