"""Pieces the benchmark reports share: loading result rows, statistics, formatting, hand-drawn SVG charts and
HTML/text tables (html_report.py draws the page; scale_report.py its scale section). Standard library only."""
import html
import json
import math
import os
import statistics
import textwrap

# Okabe-Ito: stays distinguishable under the common colour-vision deficiencies; yellow last (faint on white).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000", "#F0E442")
FAILED_RED = "#C62828"
WIDTH = 900


# --- loading ----------------------------------------------------------------------------------------------
def load_jsonl(path, warnings):
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                warnings.append(f"{os.path.basename(path)} line {no}: not JSON ({e}); skipped")
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                warnings.append(f"{os.path.basename(path)} line {no}: not a JSON object; skipped")
    return rows


def load_json(path, warnings):
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        warnings.append(f"{os.path.basename(path)}: unreadable ({e}); ignored")
        return {}
    return value if isinstance(value, dict) else {}


def num(row, key):
    """The field as a float, or None when missing, non-numeric, a bool or not finite."""
    v = row.get(key) if isinstance(row, dict) else None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def prepare(rows, keys):
    """Make the group keys hashable and sortable; versions become ints so v10 sorts after v9."""
    for r in rows:
        for k in keys:
            v = r.get(k)
            if k == "version":
                try:
                    r[k] = int(v)
                except (TypeError, ValueError):
                    r[k] = "?" if v is None else str(v)
            else:
                r[k] = "?" if v is None else str(v)
        if num(r, "t_run") is None and None not in (num(r, "t_total"), num(r, "t_dist")):
            r["t_run"] = r["t_total"] - r["t_dist"]     # a row with only the total still splits
        if None not in (num(r, "t_dist"), num(r, "t_run")):
            r["t_stack"] = r["t_dist"] + r["t_run"]     # per-run sum, so the stacked bar gets a real sd
    return rows


def ordered(values, known=()):
    """Distinct values: known names in their canonical order, then ints ascending, then others as they came."""
    distinct = list(dict.fromkeys(values))
    return sorted(distinct, key=lambda v: (0, known.index(v)) if v in known else (1, v) if isinstance(v, int) else (2, 0))


# --- statistics -------------------------------------------------------------------------------------------
def mean_sd(values):
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def group_stats(rows, keys, fields):
    """key tuple -> {"n_ok", "n", field: (mean, sd, n) or None}; only ok rows are ever averaged."""
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    out = {}
    for key, members in groups.items():
        ok = [r for r in members if r.get("ok") is True]
        tag = next((r["tag"] for r in ok + members if isinstance(r.get("tag"), str)), None)   # for images.json
        st = {"n_ok": len(ok), "n": len(members), "tag": tag}
        for f in fields:
            st[f] = mean_sd([v for v in (num(r, f) for r in ok) if v is not None])
        out[key] = st
    return out


def mean_of(st, field):
    s = st.get(field) if st else None
    return s[0] if s else None


def sd_of(st, field):
    s = st.get(field) if st else None
    return s[1] if s and s[2] > 1 else 0.0


def ratio(a, b):
    return a / b if a is not None and b else None


def avg(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


# --- formatting -------------------------------------------------------------------------------------------
def esc(s):
    return html.escape(str(s), quote=True)


def fmt_bytes(b, short=False):
    """Decimal units (1 MB = 10^6 B), matching what link rates are quoted in."""
    if b is None:
        return "–"
    for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if abs(b) >= scale:
            v = b / scale
            return (f"{v:.0f}" if v >= 100 else f"{v:.1f}") + (unit[0] if short else " " + unit)
    return f"{b:.0f}{'' if short else ' '}B"


def fmt_msd(st, field, fmt=lambda v: f"{v:.2f}"):
    if st is None:
        return "–"
    if st["n_ok"] == 0:
        return "failed"
    s = st.get(field)
    if not s:
        return "–"
    return fmt(s[0]) if s[2] < 2 else f"{fmt(s[0])} ± {fmt(s[1])}"


def fmt_ratio(r):
    return "–" if r is None else f"{r:.2f}×"


def fmt_pct(p):
    return "–" if p is None else f"{p:.0f} %" if p >= 10 else f"{p:.1f} %" if p >= 1 else f"{p:.2g} %"


def vlabel(v):
    return f"v{v}" if isinstance(v, int) else str(v)


# --- SVG primitives ---------------------------------------------------------------------------------------
def text_w(s, size=12):
    return len(str(s)) * size * 0.58   # average advance of the sans-serif stack; used for layout only


class Svg:
    """Collects elements; the height is set once the chart has been laid out."""

    def __init__(self, uid):
        self.uid, self.parts, self.defs, self.hatches = uid, [], [], {}

    def rect(self, x, y, w, h, fill, tip=None, stroke=None):
        s = f' stroke="{stroke}" stroke-width="1"' if stroke else ""
        t = f"<title>{esc(tip)}</title>" if tip else ""
        self.parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" fill="{fill}"{s}>{t}</rect>')

    def line(self, x1, y1, x2, y2, stroke="#444", width=1):
        self.parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" stroke-width="{width}"/>')

    def text(self, x, y, s, size=12, anchor="start", colour="#222", bold=False, rotate=False):
        rot = f' transform="rotate(-90 {x:.1f} {y:.1f})"' if rotate else ""
        b = ' font-weight="600"' if bold else ""
        self.parts.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{colour}"{b}{rot}>{esc(s)}</text>')

    def hatch(self, colour):
        """A pattern fill: light tint of the colour plus diagonal stripes (ids are unique page-wide)."""
        if colour not in self.hatches:
            pid = f"{self.uid}-h{len(self.hatches)}"
            self.defs.append(f'<pattern id="{pid}" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)">'
                             f'<rect width="6" height="6" fill="{colour}" fill-opacity="0.28"/>'
                             f'<line x1="0" y1="0" x2="0" y2="6" stroke="{colour}" stroke-width="2.2"/></pattern>')
            self.hatches[colour] = f"url(#{pid})"
        return self.hatches[colour]

    def render(self, height, label):
        return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0f}" width="{WIDTH}" '
                f'height="{height:.0f}" role="img" aria-label="{esc(label)}"><defs>{"".join(self.defs)}</defs>'
                f'<rect width="100%" height="100%" fill="#fff"/>{"".join(self.parts)}</svg>')


def marker(svg, x, y, shape, fill, r=5.5):
    if shape == "rect":
        svg.rect(x - 6, y - 6, 12, 12, fill, stroke="#555" if fill.startswith("url") else None)
    elif shape == "circle":
        svg.parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{fill}" stroke="#fff" stroke-width="1.2"/>')
    elif shape == "ring":
        svg.parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r - 1}" fill="#fff" stroke="{fill}" stroke-width="2"/>')
    elif shape == "square":
        svg.rect(x - r + 0.5, y - r + 0.5, 2 * r - 1, 2 * r - 1, fill, stroke="#fff")
    elif shape == "diamond":
        pts = f"{x},{y - r - 1.5} {x + r + 1.5},{y} {x},{y + r + 1.5} {x - r - 1.5},{y}"
        svg.parts.append(f'<polygon points="{pts}" fill="{fill}" stroke="#fff" stroke-width="1.2"/>')


def legend(svg, items, x, y, max_w):
    """items: (label, fill, shape); wraps onto further rows. Returns the y below the legend."""
    cx = x
    for label, fill, shape in items:
        w = 22 + text_w(label) + 20
        if cx > x and cx + w > x + max_w:
            cx, y = x, y + 20
        marker(svg, cx + 6, y, shape, fill)
        svg.text(cx + 18, y + 4, label)
        cx += w
    return y + 12


def nice_ticks(vmax, target=5):
    vmax = vmax if vmax and vmax > 0 else 1.0
    raw = vmax / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step for i in range(math.ceil(vmax / step - 1e-9) + 1)]


def y_axis(svg, ticks, to_y, left, right, top, bottom, fmt, title):
    for t in ticks:
        y = to_y(t)
        svg.line(left, y, right, y, "#e4e4e4")
        svg.text(left - 7, y + 4, fmt(t), 11, "end", "#333")
    svg.line(left, top, left, bottom)
    svg.line(left, bottom, right, bottom)
    svg.text(16, (top + bottom) / 2, title, 12, "middle", "#333", rotate=True)


def whisker(svg, at, lo, hi, horizontal=False, cap=3):
    """An sd error bar from lo to hi (pixels along the value axis), at `at` on the other axis."""
    pt = (lambda v, o: (v, at + o)) if horizontal else (lambda v, o: (at + o, v))
    if abs(hi - lo) >= 0.5:
        for a, b in ((pt(lo, 0), pt(hi, 0)), (pt(lo, -cap), pt(lo, cap)), (pt(hi, -cap), pt(hi, cap))):
            svg.line(*a, *b, "#222", 1.1)


def failed_mark(svg, x, y, rotate=True):
    svg.text(x + 4 if rotate else x, y, "✗ failed", 11, "start", FAILED_RED, bold=True, rotate=rotate)


def chart_start(uid, title, subtitle, items):
    svg = Svg(uid)
    svg.text(12, 24, title, 16, bold=True)
    svg.text(12, 43, subtitle, 12, colour="#555")
    return svg, legend(svg, items, 12, 66, WIDTH - 24) + 22


def slots(groups, members, left, right, gap=0.22):
    """Centre x of each (group, member) bar and the bar width: groups side by side, members inside."""
    gw = (right - left) / max(len(groups), 1)
    bw = gw * (1 - gap) / max(len(members), 1)
    pos = {(g, m): left + gi * gw + gw * gap / 2 + (mi + 0.5) * bw
           for gi, g in enumerate(groups) for mi, m in enumerate(members)}
    return pos, bw, gw


def x_group_labels(svg, groups, labels, left, gw, y, size=12):
    lines_max = 1
    for gi, g in enumerate(groups):
        lines = textwrap.wrap(labels(g), max(int((gw - 8) / (size * 0.58)), 6)) or [""]
        lines_max = max(lines_max, len(lines))
        for li, ln in enumerate(lines):
            svg.text(left + (gi + 0.5) * gw, y + li * (size + 3), ln, size, "middle")
    return y + lines_max * (size + 3)


# --- tables and colours ----------------------------------------------------------------------------------
def colour(name, known, present):
    """A known name keeps its colour in every report; unknown names take the palette slots after the known ones."""
    extra = [n for n in present if n not in known]
    return PALETTE[(list(known).index(name) if name in known else len(known) + extra.index(name)) % len(PALETTE)]


def html_table(head, rows, text_cols=1, merge_first=False):
    """Cells arrive as plain strings; the first text_cols are left-aligned words, the rest numbers.
    merge_first: runs of equal first cells become one rowspan cell, so a long name is printed once per block."""
    th = "".join(f'<th class="{"t" if i < text_cols else "n"}">{esc(h)}</th>' for i, h in enumerate(head))
    body = []
    for ri, row in enumerate(rows):
        cells = []
        for i, c in enumerate(row):
            if i == 0 and merge_first:
                if ri and rows[ri - 1][0] == c:
                    continue
                span = next((k for k in range(ri + 1, len(rows)) if rows[k][0] != c), len(rows)) - ri
                cells.append(f'<td class="t g" rowspan="{span}">{esc(c)}</td>')
                continue
            cls = ("t" if i < text_cols else "n") + (" failed" if c == "failed" else "")
            cells.append(f'<td class="{cls}">{esc(c)}</td>')
        first = merge_first and (ri == 0 or rows[ri - 1][0] != row[0])
        body.append(('<tr class="first">' if first else "<tr>") + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def failed_rows(bench, rows, keys):
    return [[bench, ", ".join(f"{k}={vlabel(r.get(k)) if k == 'version' else r.get(k)}" for k in keys),
             str(r.get("run", "?")), str(r.get("error") or ("no 'ok' field" if "ok" not in r else "(no error text)"))]
            for r in rows if r.get("ok") is not True]


def meta_html(meta):
    if not meta:
        return "<p class=\"muted\">No meta file was found for this benchmark.</p>"
    items = []
    for k, v in meta.items():
        if k == "peer_tools" and isinstance(v, dict):
            have = [t for t, ok in v.items() if ok]
            missing = [t for t, ok in v.items() if not ok]
            v = ("installed: " + (", ".join(have) or "none")) + ("; not installed: " + ", ".join(missing) if missing else "")
        elif k == "notes":
            continue
        elif isinstance(v, (dict, list)):
            v = json.dumps(v)
        items.append(f"<dt>{esc(k.replace('_', ' '))}</dt><dd>{esc(v)}</dd>")
    notes = meta.get("notes") if isinstance(meta.get("notes"), list) else [meta["notes"]] if meta.get("notes") else []
    out = f'<dl class="meta">{"".join(items)}</dl>'
    return out + ("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>" if notes else "")


def text_table(head, rows, text_cols):
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i < text_cols else str(c).rjust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])
