"""``report.html``: one self-contained, offline, interactive page of a report.

The page embeds plotly.js (no network, no server: open the file in any browser) and the data it
draws: per metric and x-axis, the same curves as :func:`hpo_bench.report.plot.curves` (median and
interquartile band over seeds per task and tuner). Controls pick the task, the tuners, the
metric and the x-axis; hovering a curve shows its exact median, quartiles and number of seeds.
Every report table follows, sortable by a click on a column header (numbers sort as numbers,
"not reached" and "—" last). Tuners keep the colours, markers and dashes of
:mod:`hpo_bench.report.style`.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from .plot import METRICS, XAXES, PlotError, curves, resolve_metric, resolve_x, tuner_looks

__all__ = ["write_html", "html_data", "N_GRID_HTML"]

#: Grid points per curve in the page (the figures use 100).
N_GRID_HTML = 60

#: matplotlib marker -> plotly symbol.
_SYMBOLS = {"o": "circle", "s": "square", "^": "triangle-up", "D": "diamond", "v": "triangle-down", "P": "cross",
            "X": "x", "<": "triangle-left", ">": "triangle-right", "p": "pentagon", "h": "hexagon", "*": "star"}
_NUM_RE = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?")


def _r(v: float) -> float | None:
    return float(f"{v:.10g}") if math.isfinite(v) else None


def html_data(rows: pd.DataFrame) -> dict[str, Any]:
    """The JSON the page draws: tasks, tuner looks, and curves per metric, x-axis, task and tuner.

    Only metrics and x-axes the records hold (with at least one finite value) are included.
    """
    tasks = list(pd.unique(rows.sort_values("task_order", kind="stable")["task"])) if "task_order" in rows \
        else list(pd.unique(rows["task"]))
    labels = list(pd.unique(rows.sort_values("tuner_label_order", kind="stable")["tuner_label"])) \
        if "tuner_label_order" in rows else list(pd.unique(rows["tuner_label"]))
    looks = tuner_looks(rows, labels)
    metrics, xs, data = {}, {}, {}
    for name in METRICS:
        try:
            m = resolve_metric(name, rows)
        except PlotError:
            continue
        for x in XAXES:
            try:
                resolve_x(x, rows)
            except PlotError:
                continue
            agg = curves(rows, metric=name, x=x, n_grid=N_GRID_HTML)
            if agg.empty:
                continue
            metrics[name] = {"label": m.label, "log": m.scale == "log"}
            xs[x] = {"label": XAXES[x][1], "log": XAXES[x][2]}
            per = data.setdefault(name, {}).setdefault(x, {})
            for (task, lab), g in agg.groupby(["task", "tuner_label"], sort=False):
                per.setdefault(task, {})[lab] = {
                    "x": [_r(v) for v in g["x"]], "median": [_r(v) for v in g["median"]],
                    "q1": [_r(v) for v in g["q1"]], "q3": [_r(v) for v in g["q3"]], "seeds": int(g["seeds"].iloc[0])}
    return {"tasks": tasks, "metrics": metrics, "xs": xs, "curves": data,
            "tuners": [{"label": lab, "color": looks[lab].color, "dash": looks[lab].plotly_dash,
                        "symbol": _SYMBOLS.get(looks[lab].marker, "circle"), "family": looks[lab].family}
                       for lab in labels]}


def _sort_key(text: str) -> str:
    """A cell's numeric sort value (its first number), or empty for text / not reached."""
    if text.startswith("n.r.") or text in ("", "—"):
        return ""
    m = _NUM_RE.search(text)
    return m.group(0) if m and text.lstrip("[*").startswith(m.group(0)[:1]) else ""


def _table_html(table: Any) -> str:
    head = "".join(f'<th data-col="{i}" title="click to sort">{html.escape(h)}</th>'
                   for i, (_, h) in enumerate(table.columns))
    body = []
    for r in table.rows:
        cells = []
        for k, _ in table.columns:
            text = str(r.get(k, ""))
            inner = f"<b>{html.escape(text)}</b>" if k in r.get("_bold", ()) and text else html.escape(text)
            cells.append(f'<td data-v="{html.escape(_sort_key(text))}">{inner}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table.notes)
    return (f'<h2 id="table-{table.name}">{html.escape(table.caption)}</h2>'
            f'<table class="sortable" id="t-{table.name}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>' + (f'<ul class="notes">{notes}</ul>' if notes else ""))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
#controls {{ display: flex; flex-wrap: wrap; gap: 1em 2em; align-items: flex-start; margin-bottom: .5em; }}
#controls label {{ font-size: .9em; }} #tuners label {{ margin-right: .8em; white-space: nowrap; }}
#plot {{ width: 100%; max-width: 1100px; height: 520px; }}
table.sortable {{ border-collapse: collapse; font-size: .85em; margin-bottom: .5em; }}
table.sortable th, table.sortable td {{ border-bottom: 1px solid #ddd; padding: 2px 8px; text-align: right; }}
table.sortable th {{ cursor: pointer; background: #f4f4f4; position: sticky; top: 0; }}
table.sortable td:first-child, table.sortable td:nth-child(2) {{ text-align: left; }}
th.asc::after {{ content: " \\25B2"; }} th.desc::after {{ content: " \\25BC"; }}
ul.notes {{ font-size: .8em; color: #555; max-width: 1100px; }}
</style>
<script>{plotly}</script>
</head><body>
<h1>{title}</h1>
<div id="controls">
 <label>task <select id="task"></select></label>
 <label>metric <select id="metric"></select></label>
 <label>x-axis <select id="x"></select></label>
 <div id="tuners"></div>
</div>
<div id="plot"></div>
<p id="empty" style="display:none">No records for this choice.</p>
{tables}
<script id="data" type="application/json">{data}</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const $ = (id) => document.getElementById(id);
function fill(sel, items) {{
  for (const [value, text] of items) {{
    const o = document.createElement("option"); o.value = value; o.textContent = text; sel.appendChild(o);
  }}
}}
fill($("task"), D.tasks.map((t) => [t, t]));
fill($("metric"), Object.entries(D.metrics).map(([k, v]) => [k, v.label]));
fill($("x"), Object.entries(D.xs).map(([k, v]) => [k, v.label]));
for (const t of D.tuners) {{
  const l = document.createElement("label");
  const c = document.createElement("input"); c.type = "checkbox"; c.checked = true; c.value = t.label;
  c.addEventListener("change", draw);
  l.appendChild(c); l.appendChild(document.createTextNode(" " + t.label)); l.style.color = t.color;
  $("tuners").appendChild(l);
}}
function rgba(hex, a) {{
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${{(n >> 16) & 255}},${{(n >> 8) & 255}},${{n & 255}},${{a}})`;
}}
function draw() {{
  const task = $("task").value, metric = $("metric").value, x = $("x").value;
  const on = new Set([...document.querySelectorAll("#tuners input:checked")].map((c) => c.value));
  const per = ((D.curves[metric] || {{}})[x] || {{}})[task] || {{}};
  const traces = [];
  for (const t of D.tuners) {{
    const c = per[t.label];
    if (!c || !on.has(t.label)) continue;
    traces.push({{x: c.x, y: c.q1, mode: "lines", line: {{width: 0}}, hoverinfo: "skip", showlegend: false,
                 legendgroup: t.label}});
    traces.push({{x: c.x, y: c.q3, mode: "lines", line: {{width: 0}}, fill: "tonexty",
                 fillcolor: rgba(t.color, 0.15), hoverinfo: "skip", showlegend: false, legendgroup: t.label}});
    traces.push({{x: c.x, y: c.median, customdata: c.x.map((_, i) => [c.q1[i], c.q3[i], c.seeds]),
                 name: t.label, legendgroup: t.label, mode: "lines+markers",
                 line: {{color: t.color, dash: t.dash, width: 2, shape: "hv"}},
                 marker: {{symbol: t.symbol, size: 6, maxdisplayed: 12}},
                 hovertemplate: `<b>${{t.label}}</b><br>x = %{{x:.6g}}<br>median = %{{y:.6g}}` +
                   `<br>IQR = [%{{customdata[0]:.6g}}, %{{customdata[1]:.6g}}]<br>seeds = %{{customdata[2]}}<extra></extra>`}});
  }}
  $("empty").style.display = traces.length ? "none" : "block";
  const layout = {{title: {{text: task}}, margin: {{t: 40, r: 20}}, hovermode: "closest",
    xaxis: {{title: {{text: D.xs[x].label}}, type: D.xs[x].log ? "log" : "linear"}},
    yaxis: {{title: {{text: D.metrics[metric].label}}, type: D.metrics[metric].log ? "log" : "linear"}},
    legend: {{orientation: "h", y: -0.18}}}};
  Plotly.react($("plot"), traces, layout, {{displaylogo: false, responsive: true}});
}}
for (const id of ["task", "metric", "x"]) $(id).addEventListener("change", draw);
draw();
for (const table of document.querySelectorAll("table.sortable")) {{
  for (const th of table.querySelectorAll("th")) {{
    th.addEventListener("click", () => {{
      const col = +th.dataset.col, asc = !th.classList.contains("asc");
      for (const h of table.querySelectorAll("th")) h.classList.remove("asc", "desc");
      th.classList.add(asc ? "asc" : "desc");
      const body = table.tBodies[0], rows = [...body.rows];
      const key = (r) => r.cells[col].dataset.v, text = (r) => r.cells[col].textContent;
      rows.sort((a, b) => {{
        const ka = key(a), kb = key(b);
        if (ka !== "" && kb !== "") return asc ? ka - kb : kb - ka;
        if (ka !== "" || kb !== "") return ka === "" ? 1 : -1;
        return asc ? text(a).localeCompare(text(b)) : text(b).localeCompare(text(a));
      }});
      for (const r of rows) body.appendChild(r);
    }});
  }}
}}
</script>
</body></html>
"""


def write_html(path: str | Path, rows: pd.DataFrame, tables: dict[str, Any] | None = None, *,
               title: str = "hpo-bench report") -> Path:
    """Write the interactive page of ``rows`` (a table from :func:`hpo_bench.report.metrics.add_derived`)
    and ``tables`` (name -> :class:`~hpo_bench.report.tables.Table`) to ``path``; returns it.

    The file is self-contained (plotly.js inlined, about 4.5 MB) and works offline.
    """
    from plotly.offline import get_plotlyjs

    data = json.dumps(html_data(rows), separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    page = _PAGE.format(title=html.escape(title), plotly=get_plotlyjs(), data=data,
                        tables="".join(_table_html(t) for t in (tables or {}).values()))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(p)
    return p

