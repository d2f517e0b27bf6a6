"""The gateway's tiny web UI, for non-API GETs a proxy passes through."""

from __future__ import annotations

INDEX_HTML = b"""<html><head><title>Simulated gateway</title></head><body>
<link rel="stylesheet" href="/static/app.css">
<h1>Simulated Powerwall gateway</h1>
<p id="status">This is a simulated Tesla Energy Gateway.</p>
<script src="/static/app.js"></script></body></html>
"""

APP_JS = b"""// Simulated gateway UI: show the battery level.
fetch('/api/system_status/soe').then(function (r) { return r.json(); })
  .then(function (d) { document.getElementById('status').textContent =
    'Battery ' + d.percentage.toFixed(1) + '%'; })
  .catch(function () {});
"""

APP_CSS = b"""body { font-family: sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; }
"""

# What a captive portal (hotel or guest Wi-Fi, a router's login) puts in front of a
# gateway: 200 OK and a sign-in page wherever the client expected JSON.
PORTAL_HTML = b"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign in to the network</title></head><body>
<h1>Sign in to continue</h1>
<p>You must sign in before you can use this network.</p>
<form method="post" action="/portal/login">
<label>User <input name="user"></label> <label>Password <input name="password" type="password"></label>
<button type="submit">Sign in</button></form></body></html>
"""

ASSETS: dict[str, tuple[str, bytes]] = {
    "/index.html": ("text/html; charset=utf-8", INDEX_HTML),
    # Same page under a name the proxy's own web/ folder does not shadow, so the
    # proxy's passthrough of gateway HTML can be tested end to end.
    "/about.html": ("text/html; charset=utf-8", INDEX_HTML),
    "/static/app.js": ("application/javascript", APP_JS),
    "/static/app.css": ("text/css", APP_CSS),
}
