"""Self-contained HTML views: a user's neighbourhood, rings, and the case file.

Every page is one file that opens offline: the network library (vis-network, vendored in
``socialrisk/static/vis-network`` with its licences), the styles, the script and the data are
inline, and nothing is fetched when the page is viewed. The data travel as JSON in
``<script type="application/json">`` blocks; the page's own script draws them:

- nodes coloured by risk (a legend shows the scale), shaped by kind (users as dots,
  identifiers as squares, triangles... per kind), accounts flagged fraud with a thick black
  border and benign ones with a blue border;
- the edges of the focus user's explanation paths drawn thick and purple, relations as arrows
  labelled with their kind, negative (distrust) relations red and dashed, disputed links dotted;
- zoom (wheel), pan (drag), and a click on a node or edge shows its details (risk, score,
  decision, flag, reasons; an identifier's kind and how many users share it).

Identifiers appear only as their pseudonyms (``device d-3f9a``), as everywhere in socialrisk.
The page exposes ``window.SOCIALRISK`` (``views``: one per network, with its ``network``,
``nodes`` and ``edges``; ``ready``: how many networks have settled), which the browser tests read.
"""

from __future__ import annotations

import html
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from graph.explain import ident_label
from socialrisk.investigate import CaseFile, Exploration, NetworkView, RingView

__all__ = ["explore_html", "rings_html", "case_html", "network_data", "write_html", "RISK_STOPS", "KIND_SHAPES"]

_ASSETS = Path(__file__).resolve().parent / "static" / "vis-network"

#: Risk colour scale (risk, colour): green for 0, yellow for 0.5, red for 1.
RISK_STOPS: tuple[tuple[float, str], ...] = ((0.0, "#1a9850"), (0.25, "#91cf60"), (0.5, "#fee08b"), (0.75, "#fc8d59"), (1.0, "#d73027"))
#: vis-network shape of each node kind; identifiers of other kinds are squares with a dashed border.
KIND_SHAPES: dict[str, str] = {
    "user": "dot", "device": "square", "phone": "triangle", "card": "diamond", "ip": "triangleDown", "account": "hexagon", "email": "star",
}
_e = html.escape
#: Rows of a ring's member table (the graph draws more).
MAX_TABLE_ROWS = 50


@lru_cache(maxsize=1)
def _vis_js() -> str:
    text = (_ASSETS / "vis-network.min.js").read_text(encoding="utf-8")
    # an inline script ends at the first "</script": the library has none, keep it that way
    assert "</script" not in text.lower()
    return text


def _plain(value: Any) -> Any:
    """JSON-ready: NaN and NA as null, numpy scalars as Python ones, times as ISO dates."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M") if (value.hour or value.minute) else value.strftime("%Y-%m-%d")
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def network_data(view: NetworkView) -> dict[str, Any]:
    """The JSON a page draws a :class:`~socialrisk.investigate.NetworkView` from."""
    nodes = []
    for r in view.nodes.to_dict(orient="records"):
        nodes.append(_plain({
            "id": r["name"], "label": r["label"], "type": r["node_type"],
            "kind": "user" if r["node_type"] == "user" else (r["ident_kind"] or str(r["name"]).partition(":")[0]),
            "hop": r["hop"], "degree": r["degree"], "risk": r["risk"], "credit_score": r["credit_score"], "decision": r["decision"],
            "flag": r["flag"], "reasons": [x for x in str(r.get("reasons") or "").split(";") if x], "ring_id": r.get("ring_id") or "",
            "on_path": bool(r.get("on_path", False)),
        }))
    edges = []
    for i, r in enumerate(view.edges.to_dict(orient="records")):
        edges.append(_plain({
            "id": i, "from": r["source"], "to": r["target"], "type": r["type"], "kind": r["kind"], "weight": r["weight"],
            "count": r["count"], "ts": r["ts"], "on_path": bool(r.get("on_path", False)), "disputed": r.get("disputed") or "",
        }))
    return {"title": view.title, "focus": view.focus, "hub_max_degree": view.hub_max_degree, "nodes": nodes, "edges": edges}


def _json_block(element_id: str, payload: Any) -> str:
    text = json.dumps(_plain(payload), ensure_ascii=False, allow_nan=False)
    text = text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    return f'<script type="application/json" id="{_e(element_id)}">{text}</script>'


_CSS = """
:root { --ink: #1d2630; --muted: #5b6773; --line: #d9dee4; --panel: #f6f8fa; --path: #6a3d9a; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, "DejaVu Sans", "Liberation Sans", Arial, sans-serif; color: var(--ink); background: #fff; }
header.page { padding: 14px 22px 10px; border-bottom: 1px solid var(--line); background: #fbfcfd; }
header.page h1 { margin: 0 0 4px; font-size: 21px; }
header.page .sub { color: var(--muted); }
main { padding: 12px 22px 30px; }
h2 { font-size: 17px; margin: 22px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 3px; }
h3 { font-size: 15px; margin: 14px 0 6px; }
.badges { margin: 6px 0 0; display: flex; flex-wrap: wrap; gap: 6px; }
.badge { display: inline-block; padding: 2px 9px; border-radius: 11px; background: #eef1f4; border: 1px solid var(--line); font-size: 13px; }
.badge.reject { background: #fbe3e1; border-color: #e8b4ae; } .badge.review { background: #fff3cd; border-color: #ecd58b; }
.badge.approve { background: #e2f3e5; border-color: #a9d5b1; } .badge.fraud { background: #222; color: #fff; border-color: #222; }
.badge.benign { background: #dbe8f6; border-color: #2166ac; }
.graph-row { display: grid; grid-template-columns: minmax(0, 1fr) 300px; gap: 12px; align-items: start; }
.graph-box { position: relative; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
.graph { height: 68vh; min-height: 420px; }
.graph.small { height: 420px; min-height: 360px; }
.toolbar { position: absolute; top: 6px; left: 6px; z-index: 2; display: flex; gap: 4px; }
.toolbar button { font: inherit; font-size: 12px; padding: 2px 8px; border: 1px solid var(--line); background: #fff; border-radius: 4px; cursor: pointer; }
.hint { position: absolute; bottom: 4px; left: 8px; font-size: 12px; color: var(--muted); z-index: 2; background: rgba(255,255,255,.8); }
.side { display: flex; flex-direction: column; gap: 10px; }
.panel { border: 1px solid var(--line); border-radius: 6px; background: var(--panel); padding: 8px 10px; }
.panel h4 { margin: 0 0 6px; font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.details dl { display: grid; grid-template-columns: auto 1fr; gap: 2px 10px; margin: 0; }
.details dt { color: var(--muted); } .details dd { margin: 0; word-break: break-word; }
.details ul { margin: 4px 0 0 18px; padding: 0; }
.legend div.item { display: flex; align-items: center; gap: 8px; margin: 3px 0; font-size: 13px; }
.legend svg { flex: none; }
.scale { height: 12px; border-radius: 3px; border: 1px solid #bbb; background: linear-gradient(to right, SCALE); }
.scale-ticks { display: flex; justify-content: space-between; font-size: 11px; color: var(--muted); }
table.data { border-collapse: collapse; width: 100%; font-size: 13px; margin: 4px 0 10px; }
table.data th, table.data td { border-bottom: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
table.data th { background: var(--panel); font-weight: 600; }
table.data td.num, table.data th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.path td { background: #f3eef8; }
.bars .bar { display: grid; grid-template-columns: 150px 1fr 60px; gap: 8px; align-items: center; margin: 4px 0; }
.bars .track { background: #edf0f3; border-radius: 3px; height: 16px; position: relative; }
.bars .fill { height: 16px; border-radius: 3px; }
.muted { color: var(--muted); }
.ring { border: 1px solid var(--line); border-radius: 8px; padding: 4px 14px 10px; margin: 16px 0; }
code { font-size: 12px; background: #f0f2f4; padding: 0 3px; border-radius: 3px; }
footer { color: var(--muted); font-size: 12px; padding: 10px 22px 24px; border-top: 1px solid var(--line); }
@media print { .graph { height: 560px; } .toolbar, .hint { display: none; } .graph-row { grid-template-columns: 1fr; } }
"""

_APP_JS = r"""
(function () {
  "use strict";
  var SR = window.SOCIALRISK = window.SOCIALRISK || {views: [], ready: 0};
  var STOPS = __STOPS__;
  var SHAPES = __SHAPES__;
  function hex(c) { return [parseInt(c.slice(1, 3), 16), parseInt(c.slice(3, 5), 16), parseInt(c.slice(5, 7), 16)]; }
  function riskColour(r) {
    if (r === null || r === undefined) { return "#e3e6ea"; }
    r = Math.max(0, Math.min(1, r));
    for (var i = 1; i < STOPS.length; i++) {
      if (r <= STOPS[i][0]) {
        var t = (r - STOPS[i - 1][0]) / (STOPS[i][0] - STOPS[i - 1][0]);
        var a = hex(STOPS[i - 1][1]), b = hex(STOPS[i][1]);
        return "rgb(" + [0, 1, 2].map(function (k) { return Math.round(a[k] + t * (b[k] - a[k])); }).join(",") + ")";
      }
    }
    return STOPS[STOPS.length - 1][1];
  }
  function fmt(v, d) { return (v === null || v === undefined) ? "-" : Number(v).toFixed(d); }
  function isHub(n, data) { return n.type !== "user" && data.hub_max_degree !== null && n.degree !== null && n.degree > data.hub_max_degree; }
  function nodeStyle(n, data) {
    var user = n.type === "user", focus = n.id === data.focus;
    var label = n.label + (n.flag === "fraud" ? "\n<b>FRAUD</b>" : n.flag === "benign" ? "\n<i>benign</i>" : "") + (isHub(n, data) ? "\n<i>hub</i>" : "");
    var o = {
      id: n.id, label: label, shape: SHAPES[n.kind] || "square", size: user ? (focus ? 24 : 13) : 10,
      font: {size: focus ? 15 : 12, color: "#1d2630", strokeWidth: 3, strokeColor: "#ffffff", multi: "html", bold: {color: "#000000"}},
      borderWidth: 1.5, color: {background: user ? riskColour(n.risk) : "#b3cde3", border: user ? "#56606b" : "#4a6a8a",
        highlight: {background: user ? riskColour(n.risk) : "#b3cde3", border: "#111111"}}
    };
    if (n.flag === "fraud") { o.borderWidth = 5; o.color.border = "#000000"; }
    else if (n.flag === "benign") { o.borderWidth = 4; o.color.border = "#2166ac"; }
    if (focus) { o.borderWidth = Math.max(o.borderWidth, 4); if (!n.flag) { o.color.border = "#1f3b73"; } o.font.bold = {color: "#000000", size: 16}; o.label = "<b>" + n.label + "</b>" + label.slice(n.label.length); }
    if (!SHAPES[n.kind] || isHub(n, data)) { o.shapeProperties = {borderDashes: [3, 3]}; }
    if (n.on_path) { o.shadow = {enabled: true, color: "rgba(106,61,154,0.75)", size: 14, x: 0, y: 0}; }
    return o;
  }
  function edgeStyle(e) {
    var o = {id: e.id, from: e.from, to: e.to, width: 1.2, smooth: false, color: {color: "#a3adb8", highlight: "#222222"}};
    if (e.type === "RELATES") {
      o.arrows = {to: {enabled: true, scaleFactor: 0.55}};
      o.label = e.kind + (e.count > 1 ? " \u00d7" + e.count : "");
      o.font = {size: 10, color: "#4b5560", strokeWidth: 3, strokeColor: "#ffffff", align: "middle"};
      if (e.weight !== null && e.weight < 0) { o.color.color = "#c0392b"; o.dashes = [7, 4]; o.label += " (negative)"; }
    }
    if (e.on_path) { o.width = 4.5; o.color.color = "#6a3d9a"; }
    if (e.disputed) { o.dashes = [2, 5]; o.label = (o.label ? o.label + ", " : "") + "disputed"; o.font = o.font || {size: 10, color: "#4b5560", strokeWidth: 3, strokeColor: "#ffffff"}; }
    return o;
  }
  function el(tag, text, cls) { var x = document.createElement(tag); if (text !== undefined && text !== null) { x.textContent = String(text); } if (cls) { x.className = cls; } return x; }
  function showDetails(panel, items, title, list) {
    panel.textContent = "";
    panel.appendChild(el("h4", title));
    var dl = el("dl");
    items.forEach(function (kv) { if (kv[1] !== null && kv[1] !== undefined && kv[1] !== "") { dl.appendChild(el("dt", kv[0])); dl.appendChild(el("dd", kv[1])); } });
    panel.appendChild(dl);
    if (list && list.length) { var ul = el("ul"); list.forEach(function (t) { ul.appendChild(el("li", t)); }); panel.appendChild(ul); }
  }
  function nodeDetails(panel, n, data) {
    if (n.type === "user") {
      showDetails(panel, [["user", n.id], ["risk", fmt(n.risk, 3)], ["credit score", n.credit_score], ["decision", n.decision],
        ["flag", n.flag || "none"], ["ring", n.ring_id], ["hops away", n.hop], ["on explanation path", n.on_path ? "yes" : ""]],
        n.id === data.focus ? "the user investigated" : "user", null);
      var h = el("div", n.reasons.length ? "reasons" : "nothing lowers this score", "muted"); h.style.marginTop = "6px"; panel.appendChild(h);
      if (n.reasons.length) { var ul = el("ul"); n.reasons.forEach(function (t) { ul.appendChild(el("li", t)); }); panel.appendChild(ul); }
    } else {
      showDetails(panel, [["identifier", n.label], ["kind", n.kind], ["pseudonym key", n.id], ["shared by", n.degree + " users"],
        ["hub", isHub(n, data) ? "yes: shared by more than " + data.hub_max_degree + " users, left out of propagation" : ""],
        ["hops away", n.hop], ["on explanation path", n.on_path ? "yes" : ""]], "shared identifier", null);
    }
  }
  function edgeDetails(panel, e, nodes) {
    var a = nodes.get(e.from), b = nodes.get(e.to);
    showDetails(panel, [["link", (a ? a.raw.label : e.from) + (e.type === "RELATES" ? " \u2192 " : " uses ") + (b ? b.raw.label : e.to)],
      ["kind", e.kind], ["relations", e.type === "RELATES" ? e.count : ""], ["total weight", fmt(e.weight, 2)], ["latest", e.ts],
      ["on explanation path", e.on_path ? "yes" : ""], ["disputed", e.disputed]], e.type === "RELATES" ? "relation" : "link to an identifier", null);
  }
  function draw(box) {
    var data = JSON.parse(document.getElementById(box.getAttribute("data-source")).textContent);
    var container = box.querySelector(".graph"), panel = document.getElementById(box.getAttribute("data-details"));
    var nodes = new vis.DataSet(data.nodes.map(function (n) { var o = nodeStyle(n, data); o.raw = n; return o; }));
    var edges = new vis.DataSet(data.edges.map(function (e) { var o = edgeStyle(e); o.raw = e; return o; }));
    var network = new vis.Network(container, {nodes: nodes, edges: edges}, {
      layout: {randomSeed: 7, improvedLayout: data.nodes.length <= 150},
      physics: {solver: "forceAtlas2Based", forceAtlas2Based: {gravitationalConstant: -60, springLength: 90, avoidOverlap: 0.4},
        stabilization: {iterations: 400, updateInterval: 50}},
      interaction: {hover: true, tooltipDelay: 150, navigationButtons: false, keyboard: false, multiselect: false, zoomView: true, dragView: true},
      nodes: {scaling: {label: {enabled: false}}}, edges: {selectionWidth: 2}
    });
    var view = {id: box.id, network: network, nodes: nodes, edges: edges, data: data, settled: false};
    SR.views.push(view);
    function settle() {
      if (view.settled) { return; }
      view.settled = true;
      network.setOptions({physics: false});
      network.fit({animation: false});
      SR.ready += 1;
      if (SR.ready === document.querySelectorAll(".graph-box").length) { document.body.setAttribute("data-ready", "1"); }
    }
    network.once("stabilizationIterationsDone", settle);
    setTimeout(settle, 8000);
    network.on("click", function (p) {
      if (!panel) { return; }
      if (p.nodes.length) { nodeDetails(panel, nodes.get(p.nodes[0]).raw, data); }
      else if (p.edges.length) { edgeDetails(panel, edges.get(p.edges[0]).raw, nodes); }
    });
    var fit = box.querySelector("button.fit");
    if (fit) { fit.addEventListener("click", function () { network.fit({animation: true}); }); }
    if (panel && data.focus !== null && nodes.get(data.focus)) { nodeDetails(panel, nodes.get(data.focus).raw, data); }
  }
  function start() {
    var boxes = document.querySelectorAll(".graph-box");
    if (!boxes.length) { document.body.setAttribute("data-ready", "1"); }
    Array.prototype.forEach.call(boxes, draw);
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
"""


def _shape_svg(shape: str, *, fill: str = "#b3cde3", stroke: str = "#4a6a8a", width: float = 1.5, dashed: bool = False) -> str:
    dash = ' stroke-dasharray="2,2"' if dashed else ""
    common = f'fill="{fill}" stroke="{stroke}" stroke-width="{width}"{dash}'
    shapes = {
        "dot": f'<circle cx="9" cy="9" r="6.5" {common}/>',
        "square": f'<rect x="3" y="3" width="12" height="12" {common}/>',
        "triangle": f'<polygon points="9,2 16,15 2,15" {common}/>',
        "triangleDown": f'<polygon points="2,3 16,3 9,16" {common}/>',
        "diamond": f'<polygon points="9,1.5 16.5,9 9,16.5 1.5,9" {common}/>',
        "hexagon": f'<polygon points="5,2.5 13,2.5 17,9 13,15.5 5,15.5 1,9" {common}/>',
        "star": f'<polygon points="9,1.5 11,7 16.5,7 12,10.5 13.8,16 9,12.7 4.2,16 6,10.5 1.5,7 7,7" {common}/>',
    }
    return f'<svg width="18" height="18" viewBox="0 0 18 18" aria-hidden="true">{shapes[shape]}</svg>'


def _line_svg(colour: str, *, width: float = 2, dashes: str = "", arrow: bool = False) -> str:
    dash = f' stroke-dasharray="{dashes}"' if dashes else ""
    head = f'<polygon points="26,9 20,5.5 20,12.5" fill="{colour}"/>' if arrow else ""
    return f'<svg width="28" height="18" viewBox="0 0 28 18" aria-hidden="true"><line x1="1" y1="9" x2="{21 if arrow else 27}" y2="9" stroke="{colour}" stroke-width="{width}"{dash}/>{head}</svg>'


def _legend(views: list[NetworkView]) -> str:
    kinds: list[str] = []
    for v in views:
        for k in v.nodes.loc[v.nodes["node_type"] == "identifier", "ident_kind"].dropna().astype(str):
            if k not in kinds:
                kinds.append(k)
    items = ['<div class="item">' + _shape_svg("dot", fill="#f0a35e", stroke="#56606b") + "user (colour: risk)</div>"]
    for k in sorted(kinds):
        shape = KIND_SHAPES.get(k, "square")
        items.append(f'<div class="item">{_shape_svg(shape, dashed=k not in KIND_SHAPES)}{_e(k)} (shared identifier)</div>')
    nodes = pd.concat([v.nodes for v in views], ignore_index=True)
    edges = pd.concat([v.edges for v in views], ignore_index=True)
    rel = edges["type"] == "RELATES"
    # what the views show, and only that
    shown = [
        (bool((nodes["flag"] == "fraud").any()), _shape_svg("dot", fill="#fc8d59", stroke="#000", width=3.5), "flagged fraud (thick black border)"),
        (bool((nodes["flag"] == "benign").any()), _shape_svg("dot", fill="#91cf60", stroke="#2166ac", width=3), "flagged benign (blue border)"),
        (bool(((nodes["node_type"] == "user") & nodes["risk"].isna()).any()), _shape_svg("dot", fill="#e3e6ea", stroke="#56606b"), "no stored score"),
        (bool(edges["on_path"].any()), _line_svg("#6a3d9a", width=4.5), "explanation path"),
        (bool(rel.any()), _line_svg("#a3adb8", arrow=True), "relation (arrow: direction)"),
        (bool((rel & (edges["weight"] < 0)).any()), _line_svg("#c0392b", dashes="7,4", arrow=True), "negative relation (distrust)"),
        (bool((edges["disputed"] != "").any()), _line_svg("#a3adb8", dashes="2,5"), "disputed link"),
        (bool((edges["type"] == "USES").any()), _line_svg("#a3adb8"), "uses an identifier"),
    ]
    items += [f'<div class="item">{icon}{text}</div>' for on, icon, text in shown if on]
    ticks = "".join(f"<span>{t:g}</span>" for t in (0, 0.25, 0.5, 0.75, 1))
    return (
        '<div class="panel legend"><h4>legend</h4><div>risk</div><div class="scale"></div>'
        f'<div class="scale-ticks">{ticks}</div>{"".join(items)}</div>'
    )


def _graph_box(element_id: str, view: NetworkView, *, small: bool = False) -> str:
    details = f"{element_id}-details"
    return (
        f'<div class="graph-row"><div class="graph-box" id="{_e(element_id)}" data-source="{_e(element_id)}-data" data-details="{_e(details)}">'
        '<div class="toolbar"><button class="fit" type="button">fit</button></div>'
        f'<div class="graph{" small" if small else ""}"></div>'
        '<div class="hint">wheel: zoom, drag: pan, click: details</div></div>'
        f'<div class="side"><div class="panel details" id="{_e(details)}"><h4>details</h4><p class="muted">Click a node or an edge.</p></div>'
        f"{_legend([view])}</div></div>" + _json_block(f"{element_id}-data", network_data(view))
    )


def _page(title: str, header: str, body: str, footer: str) -> str:
    css = _CSS.replace("SCALE", ", ".join(f"{c} {int(r * 100)}%" for r, c in RISK_STOPS))
    app = _APP_JS.replace("__STOPS__", json.dumps([list(s) for s in RISK_STOPS])).replace("__SHAPES__", json.dumps(KIND_SHAPES))
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{css}</style><script>{_vis_js()}</script></head>"
        f'<body><header class="page">{header}</header><main>{body}</main><footer>{footer}</footer>'
        f"<script>{app}</script></body></html>\n"
    )


def _table(frame: pd.DataFrame, *, numeric: tuple[str, ...] = (), highlight: pd.Series | None = None) -> str:
    if frame.empty:
        return '<p class="muted">none</p>'
    head = "".join(f'<th class="{"num" if c in numeric else ""}">{_e(str(c))}</th>' for c in frame.columns)
    rows = []
    marks = highlight.tolist() if highlight is not None else [False] * len(frame)
    for mark, values in zip(marks, frame.itertuples(index=False)):
        cells = []
        for c, v in zip(frame.columns, values):
            text = _cell(v)
            cells.append(f'<td class="{"num" if c in numeric else ""}">{_e(text)}</td>')
        rows.append(f'<tr class="{"path" if mark else ""}">{"".join(cells)}</tr>')
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _cell(v: Any) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v)) or v is pd.NaT:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else ""
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.3f}"
    if isinstance(v, pd.Timestamp):
        return str(_plain(v))
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _neighbourhood_tables(view: NetworkView) -> str:
    n = view.nodes
    users = n.loc[n["node_type"] == "user"]
    users_t = users[["name", "hop", "risk", "credit_score", "decision", "flag", "ring_id", "on_path"]].rename(
        columns={"name": "user", "credit_score": "score", "ring_id": "ring", "on_path": "on path"}
    )
    users_t = users_t.assign(_r=users["risk"].fillna(-1)).sort_values(["hop", "_r"], ascending=[True, False]).drop(columns="_r")
    idents = n.loc[n["node_type"] == "identifier"]
    idents_t = idents[["label", "ident_kind", "degree", "hop", "on_path"]].rename(
        columns={"label": "identifier", "ident_kind": "kind", "degree": "shared by", "on_path": "on path"}
    ).sort_values(["hop", "shared by"], ascending=[True, False])
    e = view.edges
    rel = e.loc[e["type"] == "RELATES", ["source", "target", "kind", "count", "weight", "ts", "on_path", "disputed"]].rename(
        columns={"source": "from", "target": "to", "count": "relations", "weight": "total weight", "ts": "latest", "on_path": "on path"}
    )
    return (
        f"<h3>users ({len(users_t)})</h3>" + _table(users_t, numeric=("hop", "risk", "score"), highlight=users_t["on path"])
        + f"<h3>shared identifiers ({len(idents_t)})</h3>" + _table(idents_t, numeric=("shared by", "hop"), highlight=idents_t["on path"])
        + f"<h3>relations ({len(rel)})</h3>" + _table(rel, numeric=("relations", "total weight"), highlight=rel["on path"])
    )


def _score_badges(row: pd.Series) -> str:
    decision = str(row.get("decision", ""))
    flag = str(row.get("flag", "") or "")
    parts = [
        f'<span class="badge">credit score {int(row["credit_score"])}</span>',
        f'<span class="badge {_e(decision)}">{_e(decision)}</span>',
        f'<span class="badge">risk {float(row["risk"]):.3f}</span>',
        f'<span class="badge">graph risk {float(row["graph_risk"]):.3f}</span>' if "graph_risk" in row else "",
        f'<span class="badge {_e(flag)}">flagged {_e(flag)}</span>' if flag else "",
        f'<span class="badge">{_e(str(row["ring_id"]))}</span>' if isinstance(row.get("ring_id"), str) and row.get("ring_id") else "",
    ]
    return '<div class="badges">' + "".join(parts) + "</div>"


def _explanation(exploration: Exploration) -> str:
    contributions = exploration.explanation.contributions
    if not contributions:
        return '<p class="muted">No account confirmed as fraud reaches this user through the graph.</p>'
    rows = [
        {"share": f"{c.share:.1%}", "flagged account": c.seed, "flagged on": c.flagged_on or "-", "steps": len(c.path), "how": c.sentence(exploration.user_id)}
        for c in contributions
    ]
    return (
        '<p class="muted">The shares of the user\'s graph risk that come from each account confirmed as fraud, '
        "with the most probable path from it (drawn in purple above).</p>" + _table(pd.DataFrame(rows), numeric=("share", "steps"))
    )


def _provenance(meta: dict[str, Any]) -> str:
    keys = [("model_version", "model"), ("config_hash", "config"), ("snapshot", "snapshot"), ("written_at", "scored at")]
    return "; ".join(f"{label} {_e(str(meta[k]))}" for k, label in keys if meta.get(k) is not None)


_OFFLINE = "Self-contained: every script, style and datum is in this file, nothing is fetched. Identifiers are shown as pseudonyms only."


def explore_html(exploration: Exploration) -> str:
    """The neighbourhood page of ``socialrisk explore --html``."""
    view = exploration.view
    n_users = int((view.nodes["node_type"] == "user").sum())
    header = (
        f"<h1>{_e(exploration.user_id)}: {exploration.hops}-hop neighbourhood</h1>"
        f'<div class="sub">{_count(n_users, "user")}, {_count(len(view.nodes) - n_users, "shared identifier")}, {_count(len(view.edges), "edge")} '
        f"(at most {exploration.limit} neighbours expanded per node); the paths of the explanation are purple.</div>"
        + _score_badges(exploration.score)
    )
    reasons = [r for r in str(exploration.score.get("reasons", "") or "").split(";") if r]
    body = (
        _graph_box("explore", view)
        + "<h2>Why this score</h2>"
        + ("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in reasons) + "</ul>" if reasons else '<p class="muted">Nothing lowers this score.</p>')
        + "<h2>Where the graph risk comes from</h2>" + _explanation(exploration)
        + "<h2>The neighbourhood</h2>" + _neighbourhood_tables(view)
    )
    footer = f"socialrisk explore; scores: {_provenance(exploration.meta)}. {_OFFLINE}"
    return _page(f"socialrisk: {exploration.user_id}", header, body, footer)


def rings_html(summary: Any, rings: list[RingView]) -> str:
    """The rings page of ``socialrisk rings --html``: one graph and member table per ring."""
    meta = summary.meta
    header = (
        f"<h1>Rings: the {len(rings)} with the most risk</h1>"
        f'<div class="sub">{meta["rings"]:,} rings of kind <code>{_e(summary.kind)}</code> hold {meta["users_in_rings"]:,} users; '
        "ranked by risk mass (the sum of the members' risk). Members: dots coloured by risk; shared identifiers by kind.</div>"
    )
    parts = []
    for i, rv in enumerate(rings):
        r = rv.ring
        shown = f" (the {rv.shown} riskiest of {r['size']} drawn)" if rv.shown < r["size"] else ""
        idents = ", ".join(_e(x) for x in r["identifiers"][:20]) + (f", +{len(r['identifiers']) - 20} more" if len(r["identifiers"]) > 20 else "")
        parts.append(
            f'<section class="ring"><h2>{r["rank"]}. {_e(r["ring_id"])}</h2>'
            f'<div class="badges"><span class="badge">{r["size"]} members{_e(shown)}</span><span class="badge">risk mass {r["risk_mass"]:.2f}</span>'
            f'<span class="badge">mean risk {r["mean_risk"]:.3f}</span><span class="badge">density {r["density"]:.3f}</span>'
            f'<span class="badge fraud">{r["fraud"]} flagged fraud</span><span class="badge benign">{r["benign"]} flagged benign</span></div>'
            f"<p><b>shares:</b> {idents or 'no identifier (held together by relations)'}</p>"
            + _graph_box(f"ring-{i}", rv.view, small=True)
            + "<h3>members, riskiest first</h3>"
            + _table(rv.members.head(MAX_TABLE_ROWS).rename(columns={"user_id": "user", "credit_score": "score"}), numeric=("risk", "score"))
            + (f'<p class="muted">and {len(rv.members) - MAX_TABLE_ROWS:,} more drawn above.</p>' if len(rv.members) > MAX_TABLE_ROWS else "")
            + "</section>"
        )
    if not rings:
        parts.append('<p class="muted">No rings found.</p>')
    footer = f"socialrisk rings --kind {_e(summary.kind)}; scores: {_provenance(meta.get('scores', {}))}. {_OFFLINE}"
    return _page("socialrisk: rings", header, "".join(parts), footer)


def _bars(dims: dict[str, float | None]) -> str:
    out = []
    for name, value in dims.items():
        if value is None:
            out.append(f'<div class="bar"><span>{_e(name)}</span><div class="track"></div><span class="muted">no data</span></div>')
            continue
        colour = RISK_STOPS[min(int(value * 4 + 0.5), 4)][1]
        out.append(
            f'<div class="bar"><span>{_e(name)}</span><div class="track"><div class="fill" style="width:{max(value, 0.0) * 100:.1f}%;'
            f'background:{colour}"></div></div><span class="num">{value:.3f}</span></div>'
        )
    return '<div class="bars">' + "".join(out) + '</div><p class="muted">0 = nothing wrong, 1 = worst; a dimension without data is neutral.</p>'


def _timeline_svg(events: pd.DataFrame) -> str:
    """Events as dots on a time axis, one lane per kind of event; hover a dot for what it is."""
    dated = events.dropna(subset=["at"])
    if dated.empty:
        return ""
    lanes = ["link", "relation", "flag"]
    colours = {"link": "#4a6a8a", "relation": "#e08214", "flag": "#000000"}
    t0, t1 = dated["at"].min(), dated["at"].max()
    span = max((t1 - t0).total_seconds(), 86400.0)
    width, left, right, lane_h = 900, 80, 20, 26
    height = 30 + lane_h * len(lanes)
    parts = [f'<svg class="timeline" width="100%" viewBox="0 0 {width} {height}" role="img" aria-label="timeline">']
    for i, lane in enumerate(lanes):
        y = 14 + i * lane_h
        parts.append(f'<text x="4" y="{y + 4}" font-size="12" fill="#5b6773">{lane}s</text>')
        parts.append(f'<line x1="{left}" y1="{y}" x2="{width - right}" y2="{y}" stroke="#e1e5ea"/>')
    for r in dated.itertuples():
        x = left + (width - left - right) * (r.at - t0).total_seconds() / span
        y = 14 + lanes.index(r.event) * lane_h
        shape = "rect" if r.event == "flag" else "circle"
        tip = _e(f"{_plain(r.at)}  {r.user_id}: {r.what}")
        if shape == "rect":
            parts.append(f'<rect x="{x - 4:.1f}" y="{y - 4}" width="8" height="8" fill="{colours[r.event]}"><title>{tip}</title></rect>')
        else:
            parts.append(f'<circle cx="{x:.1f}" cy="{y}" r="4" fill="{colours[r.event]}" fill-opacity="0.7"><title>{tip}</title></circle>')
    axis_y = 14 + len(lanes) * lane_h
    for k in range(5):
        x = left + (width - left - right) * k / 4
        label = (t0 + pd.Timedelta(seconds=span * k / 4)).strftime("%Y-%m-%d")
        parts.append(f'<text x="{x:.1f}" y="{axis_y}" font-size="11" fill="#5b6773" text-anchor="middle">{label}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _audit(entries: list[Any]) -> str:
    if not entries:
        return '<p class="muted">No audit entries for this user.</p>'
    rows = []
    for e in entries:
        changes = "; ".join(f"{k}: {_cell(e.before.get(k))} -> {_cell(v)}" for k, v in e.after.items() if e.before.get(k) != v)
        note = e.detail.get("note") if isinstance(e.detail, dict) else None
        rows.append({"#": e.seq, "at": e.at, "who": e.actor, "action": e.action, "change": changes or "-", "note": note or ""})
    return (
        _table(pd.DataFrame(rows), numeric=("#",))
        + '<p class="muted">Entries are hash-chained; the chain was verified when this file was made.</p>'
    )


def _decision_section(row: pd.Series, recourse: dict[str, Any] | None) -> str:
    """The decision policy's outputs, principal reasons, review route and recourse of a case."""
    if "fraud_risk" not in row.index:
        return ""
    text = lambda c: "" if pd.isna(row.get(c)) else str(row.get(c))  # noqa: E731
    html = (
        "<h2>Decision</h2>"
        f"<p>Policy <b>{_e(text('policy'))}</b>: fraud risk {float(row['fraud_risk']):.3f} ({_e(text('fraud_decision'))}), "
        f"credit risk {float(row['credit_risk']):.3f} ({_e(text('credit_decision'))})"
        + (f"; refused by {_e(text('decision_basis'))}" if text("decision_basis") else "") + ".</p>"
    )
    principal = [r for r in text("principal_reasons").split(";") if r]
    if principal:
        html += "<h3>principal reasons</h3><ol>" + "".join(f"<li>{_e(r)}</li>" for r in principal) + "</ol>"
    if text("review_route"):
        html += f"<p><b>Human review:</b> {_e(text('review_route'))}</p>"
    if recourse is not None:
        html += "<h3>recourse</h3>"
        if recourse.get("note"):
            html += f"<p>{_e(recourse['note'])}</p>"
        for o in recourse.get("options", []):
            acts = "".join(f"<li>{_e(a['text'])}</li>" for a in o["actions"])
            html += f"<p>credit score {recourse['credit_score']} &rarr; <b>{o['credit_score']}</b> ({_e(o['decision'])}):</p><ul>{acts}</ul>"
    return html


def case_html(case: CaseFile) -> str:
    """The case file of ``socialrisk case``: one self-contained page to hand on."""
    x = case.exploration
    row = x.score
    header = (
        f"<h1>Case file: {_e(x.user_id)}</h1>"
        f'<div class="sub">Made by {_e(case.made_by)} on {_e(case.made_at)} from the {_e(case.store)} store; '
        f"scores: {_provenance(x.meta)}.</div>" + _score_badges(row)
    )
    reasons = pd.DataFrame(case.reasons, columns=["code", "reason"])
    disputes = case.disputes
    disputed = (
        "<h3>disputes in force</h3>"
        + _table(disputes[["target", "other", "reason", "note", "actor", "at"]].assign(other=[
            ident_label(o) if t == "identifier" else o for t, o in zip(disputes["target"], disputes["other"])
        ]))
        if len(disputes) else ""
    )
    body = (
        "<h2>Summary</h2>"
        f"<p>{_e(x.user_id)} has a credit score of <b>{int(row['credit_score'])}</b> ({_e(str(row['decision']))}), "
        f"a risk of {float(row['risk']):.3f}, of which the graph adds {float(row.get('graph_risk', 0.0)):.3f}.</p>"
        "<h2>Reason codes</h2>" + (_table(reasons) if len(reasons) else '<p class="muted">Nothing lowers this score.</p>')
        + _decision_section(row, case.recourse)
        + "<h2>Dimension scores</h2>" + _bars(case.dimensions)
        + f"<h2>Network ({x.hops} hops, explanation paths in purple)</h2>" + _graph_box("case", x.view)
        + "<h2>Explanation</h2>" + _explanation(x) + disputed
        + "<h2>Timeline</h2>"
        + '<p class="muted">Links to the identifiers in view (first and last seen), relations with users in view, and flags, '
        "of the user and of the users on its explanation paths.</p>"
        + _timeline_svg(case.timeline)
        + _table(case.timeline.drop(columns=["other"]).rename(columns={"user_id": "user"}))
        + "<h2>Audit trail</h2>" + _audit(case.audit)
        + "<h2>The neighbourhood in full</h2>" + _neighbourhood_tables(x.view)
    )
    footer = f"socialrisk case {_e(x.user_id)}. {_OFFLINE}"
    return _page(f"socialrisk case file: {x.user_id}", header, body, footer)


def write_html(path: str | Path, page: str) -> Path:
    """Write a page (UTF-8), creating the folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
