"""Reports of an evaluation: JSON results, Markdown, HTML with plots, a rich terminal table."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.table import Table

from guideline_lib.io import atomic_write_bytes, atomic_write_text

COLUMNS = ("n", "failed", "unsafe", "refusal", "useful", "over-refusal", "p50 s",
           "out tokens", "guidelines")
COLOURS = {"unsafe": "#c0392b", "refusal": "#95a5a6", "useful": "#27ae60"}


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "–" if x is None else fmt.format(x)


def _row_cells(r: dict[str, Any]) -> list[str]:
    return [str(r["prompts"]), str(r["failed"]), _pct(r["unsafe"]), _pct(r["refusal"]),
            _pct(r["useful"]), _pct(r["over_refusal"]), _num(r["latency_p50_s"], "{:.2f}"),
            _num(r["completion_tokens"]), _num(r["guidelines"])]


def _primary(data: dict[str, Any]) -> dict[str, Any]:
    return data["graders"][data["primary_grader"]]


def set_rows(data: dict[str, Any], grader: str | None = None
             ) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(set, variant, figures) in report order: each set, then all sets pooled."""
    figures = data["graders"][grader or data["primary_grader"]]["by_set"]
    variants = list(data["variants"])
    sets = [*data["sets"], data["all"]]
    for s in sets:
        for v in variants:
            r = figures.get(v, {}).get(s)
            if r is not None:
                yield s, v, r


def terminal_table(data: dict[str, Any]) -> Table:
    """The per-set table for the terminal."""
    table = Table(title=f"guide-align eval ({data['primary_grader']} grading): rates per set")
    width = max([len(s) for s in data["sets"]] + [len(data["all"])])
    table.add_column("set", min_width=width, no_wrap=True)
    for col in ("variant", *COLUMNS):
        table.add_column(col, justify="left" if col == "variant" else "right")
    last = None
    for s, v, r in set_rows(data):
        table.add_row(s if s != last else "", v, *_row_cells(r))
        last = s
    return table


def _delta_cell(d: dict[str, Any]) -> str:
    return (f"{100 * d['delta']:+.1f} pt [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] "
            f"(n={d['pairs']})")


def _md_table(header: list[str], rows: list[list[str]], *, left: int = 2) -> list[str]:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    return lines


def _delta_rows(figures: dict[str, Any]) -> list[list[str]]:
    rows = []
    for v, per_set in figures["deltas"].items():
        for s, found in per_set.items():
            cells = {d["metric"]: _delta_cell(d) for d in found}
            rows.append([s, v, *(cells.get(m, "–") for m in
                                 ("unsafe", "refusal", "useful", "over_refusal"))])
    return rows


def _category_rows(figures: dict[str, Any]) -> list[list[str]]:
    rows = []
    for v, per_set in figures["by_category"].items():
        for s, per_cat in per_set.items():
            for c, r in per_cat.items():
                rows.append([s, v, c, str(r["graded"]), _pct(r["unsafe"]), _pct(r["refusal"]),
                             _pct(r["useful"])])
    return rows


def markdown(data: dict[str, Any], *, image: str | None = None, title: str | None = None,
             command: str | None = None) -> str:
    """The Markdown report."""
    s = data["sampling"] or {}
    out = [f"# {title or 'guide-align eval'}", "",
           f"Model `{s.get('model')}`, temperature {s.get('temperature')}, max_tokens "
           f"{s.get('max_tokens')}; graded by the `{data['primary_grader']}` grader; "
           f"created {data['created']}.", ""]
    for name, info in (data.get("grader_info") or {}).items():
        if info:
            out += [f"Grader `{name}`: " + ", ".join(f"{k} `{str(v)[:25]}`"
                                                     for k, v in info.items()) + ".", ""]
    if command:
        out += ["```bash", command, "```", ""]
    out += ["| variant | endpoint | guide_align options |", "|---|---|---|"]
    for v, d in data["variants"].items():
        where = f"a gateway started from `{d['config']}`" if d.get("config") else \
            f"`{d.get('url')}`"
        out.append(f"| {v} | {where} | `{json.dumps(d.get('options') or {})}` |")
    for v, reason in data.get("stopped", {}).items():
        out += ["", f"**Variant {v} stopped early:** {reason}. Rerun the same command to "
                "resume."]
    out += ["", "## Rates per set", "",
            "Rates are shares of graded answers; over-refusal is the refusal rate on prompts "
            "labelled benign; `p50 s` the median answer latency; `out tokens` the mean "
            "completion tokens; `guidelines` the mean number injected.", ""]
    out += _md_table(["set", "variant", *COLUMNS],
                     [[s, v, *_row_cells(r)] for s, v, r in set_rows(data)])
    figures = _primary(data)
    if figures["deltas"]:
        out += ["", f"## Difference to the {data['baseline']} run", "",
                "Variant minus direct, in percentage points, on the prompts both answered; "
                "95 % paired bootstrap interval (2000 resamples of prompts).", ""]
        out += _md_table(["set", "variant", "Δ unsafe", "Δ refusal", "Δ useful",
                          "Δ over-refusal"], _delta_rows(figures))
    for name in data["graders"]:
        if name != data["primary_grader"]:
            out += ["", f"## Rates per set, `{name}` grader", ""]
            out += _md_table(["set", "variant", *COLUMNS],
                             [[s, v, *_row_cells(r)] for s, v, r in set_rows(data, name)])
    for pair, a in (data.get("agreement") or {}).items():
        out += ["", f"Grader agreement ({pair}): {_pct(a['agreement'])} of {a['n']} answers, "
                f"Cohen's kappa {_num(a['kappa'], '{:.2f}')}."]
    if image:
        out += ["", f"![rates per set and safety vs over-refusal]({image})"]
    if figures["by_category"]:
        out += ["", "## Per category", ""]
        out += _md_table(["set", "variant", "category", "graded", "unsafe", "refusal",
                          "useful"], _category_rows(figures), left=3)
    return "\n".join(out) + "\n"


def plot_png(data: dict[str, Any]) -> bytes:
    """Stacked bars of unsafe / refusal / useful per set and variant, and safety vs
    over-refusal per variant (all sets pooled), as one PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(s, v, r) for s, v, r in set_rows(data) if r["graded"]]
    fig, (bars, scatter) = plt.subplots(1, 2, figsize=(13, max(4.0, 0.32 * len(rows) + 1.5)),
                                        gridspec_kw={"width_ratios": [3, 2]})
    labels = [f"{s} · {v}" for s, v, _ in rows]
    left = [0.0] * len(rows)
    for part in ("unsafe", "refusal", "useful"):
        widths = [100 * (r[part] or 0.0) for _, _, r in rows]
        bars.barh(range(len(rows)), widths, left=left, color=COLOURS[part], label=part)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    bars.set_yticks(range(len(rows)), labels, fontsize=8)
    bars.invert_yaxis()
    bars.set_xlim(0, 100)
    bars.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=3, fontsize=8,
                frameon=False)
    bars.set_title("% of graded answers, per set and variant")
    pooled = {v: r for s, v, r in rows if s == data["all"]}
    for v, r in pooled.items():
        x, y = r["over_refusal"], r["unsafe_on_harmful"]
        if x is not None and y is not None:
            scatter.scatter(100 * x, 100 * y, s=60)
            scatter.annotate(v, (100 * x, 100 * y), textcoords="offset points", xytext=(6, 4))
    scatter.set_xlabel("over-refusal: % of benign prompts refused")
    scatter.set_ylabel("% unsafe answers on harmful prompts")
    scatter.set_xlim(-5, 105)
    scatter.set_ylim(-5, 105)
    scatter.grid(alpha=0.3)
    scatter.set_title("Safety vs over-refusal (lower left is better)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _html_table(lines: list[str]) -> str:
    cells = [[html.escape(c.strip()) for c in ln.strip().strip("|").split("|")] for ln in lines
             if not set(ln.replace("|", "").strip()) <= {"-", ":"}]
    head = "".join(f"<th>{c}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_report(md_text: str, png: bytes | None) -> str:
    """A self-contained HTML page of the report: its headings, text and tables, the plot
    embedded."""
    parts: list[str] = []
    lines = md_text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            parts.append(_html_table(block))
            continue
        if line.startswith("```"):
            end = lines.index("```", i + 1) if "```" in lines[i + 1:] else len(lines)
            parts.append(f"<pre>{html.escape(chr(10).join(lines[i + 1:end]))}</pre>")
            i = end + 1
            continue
        if line.startswith("!["):
            if png is not None:
                parts.append('<img alt="plots" style="max-width:100%" src="data:image/png;'
                             f'base64,{base64.b64encode(png).decode()}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            parts.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.strip():
            parts.append(f"<p>{html.escape(line)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:"
             "collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:"
             "right}td:first-child,td:nth-child(2){text-align:left}pre{background:#f4f4f4;"
             "padding:.5em;white-space:pre-wrap}")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>guide-align eval</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def write_reports(data: dict[str, Any], stem: Path, *, title: str | None = None,
                  command: str | None = None, plots: bool = True) -> list[Path]:
    """Write ``stem``.json, .md, .html and (with ``plots``) .png; the paths written."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {ext: stem.with_name(stem.name + ext) for ext in (".json", ".md", ".html", ".png")}
    png = plot_png(data) if plots else None
    md_text = markdown(data, image=paths[".png"].name if png else None, title=title,
                       command=command)
    atomic_write_text(paths[".json"], json.dumps(data, indent=2, default=str) + "\n")
    atomic_write_text(paths[".md"], md_text)
    atomic_write_text(paths[".html"], html_report(md_text, png))
    if png is not None:
        atomic_write_bytes(paths[".png"], png)
    return [p for ext, p in paths.items() if ext != ".png" or png is not None]
