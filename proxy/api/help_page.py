"""/help as a page people read: the /stats body laid out as tables, in the console's look.

The reference shows the same content (its counters, one row per recorded path, the
configuration in a collapsible block kept open across refreshes, a refresh every 5 s), but
prints nested values as Python reprs. Here every nested object is a table of its own, a
list is a list, and true/false/null read as yes/no/—. A client that asks for JSON (an
`Accept` that prefers application/json to text/html) gets the body itself. Pure functions:
the route (proxy.api.status) hands in the body and the page's style tags.
"""

from __future__ import annotations

import html
import json
from typing import Any

MAX_DEPTH = 4  # nesting shown as tables; anything deeper is shown as its JSON
EMPTY = '<span class="muted">—</span>'


def _quality(accept: str, media: str) -> float:
    """The q the Accept header gives `media`: its most specific matching range decides."""
    kind = media.split("/")[0]
    best, rank = 0.0, -1
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        name = fields[0].lower()
        specific = {media: 2, f"{kind}/*": 1, "*/*": 0}.get(name)
        if specific is None or specific < rank:
            continue
        q = 1.0
        for param in fields[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best, rank = q, specific
    return best


def prefers_json(accept: str) -> bool:
    """Whether a client asks for JSON rather than HTML (a tie, e.g. */*, stays HTML)."""
    return _quality(accept, "application/json") > _quality(accept, "text/html")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def cell(value: Any, depth: int = 0) -> str:
    """One value as HTML: objects as tables, lists as lists, scalars as words."""
    if value is None or value in ("", {}, []):
        return EMPTY
    if isinstance(value, bool):
        return "yes" if value else "no"
    if depth >= MAX_DEPTH and isinstance(value, (dict, list)):
        return _e(json.dumps(value))
    if isinstance(value, dict):
        return table(value, depth + 1)
    if isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            return _e(", ".join(str(v) for v in value))
        return "<ol>" + "".join(f"<li>{cell(v, depth + 1)}</li>" for v in value) + "</ol>"
    return _e(value)


def table(values: dict[str, Any], depth: int = 0) -> str:
    rows = "".join(f'<tr><th scope="row">{_e(k)}</th><td>{cell(v, depth)}</td></tr>'
                   for k, v in values.items())
    return f'<table class="facts">{rows}</table>'


def page(body: dict[str, Any], tags: bytes, base: str) -> bytes:
    """The /help page for a /stats body; `tags` are the style tags every page gets."""
    counters = {k: v for k, v in body.items() if k not in ("uri", "config")}
    uris = "".join(f'<tr><td>{_e(path)}</td><td class="num">{_e(count)}</td></tr>'
                   for path, count in body.get("uri", {}).items())
    text = _PAGE.format(
        tags=tags.decode(), base=_e(base), version=_e(body.get("pypowerwall", "")),
        counters=table(counters), uris=uris or f"<tr><td>{EMPTY}</td><td></td></tr>",
        config=table(body.get("config", {})))
    return text.encode()


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="5">
<title>Powerwall proxy help</title>
<link rel="icon" href="{base}favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="{base}console.css">
{tags}</head>
<body class="pw-console pw-help">
<script src="{base}common.js"></script>
<header>
  <h1>Powerwall proxy</h1>
  <span class="muted">{version}</span>
  <span class="right"><a href="{base}console">console</a> &middot; <a href="{base}docs">API</a>
  &middot; every route and variable: HELP.md</span>
</header>
<main>
<section class="card"><h2>Status</h2>{counters}</section>
<section class="card"><h2>Requests by path</h2>
<table><thead><tr><th>Path</th><th class="num">Count</th></tr></thead><tbody>{uris}</tbody></table>
</section>
<section class="card"><details id="config"><summary>Configuration</summary>{config}</details></section>
</main>
<script>
var d = document.getElementById("config");
d.open = localStorage.getItem("pwConfigOpen") === "1";
d.addEventListener("toggle", function () {{ localStorage.setItem("pwConfigOpen", d.open ? "1" : "0"); }});
</script>
</body></html>
"""
