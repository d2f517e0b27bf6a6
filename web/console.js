/* Console: proxy health, gateway mode, cooldown, cache ages, request counters
   and a link to every route. Reads only the proxy's in-process routes (health,
   stats), so refreshing it never costs the gateway a request. Field names follow
   the reference's /health and /stats; anything may be absent, so every read is
   defensive. All text goes in via textContent. The "Live" card follows the aggregate's
   event stream (falling back to polling api/aggregate when streams are unavailable); it
   reads through the same cache windows as every poller. */
(function () {
  "use strict";

  var interval = PW.seconds("interval", 5, 1, 3600);

  // The reference's GET routes (reference-proxy.md §1.3), relative to BASE.
  var ROUTES = [
    ["Power flow & web", ["", "example.html", "console"]],
    ["Power data", ["aggregates", "api/meters/aggregates", "soe", "api/system_status/soe",
      "api/system_status/grid_status", "json", "csv", "csv?headers", "csv/v2", "csv/v2?headers",
      "freq", "pod", "version"]],
    ["Devices", ["vitals", "strings", "temps", "temps/pw", "alerts", "alerts/pw", "fans", "fans/pw",
      "api/troubleshooting/problems"]],
    ["Proxy", ["health", "stats", "help"]],
    ["Resets (GET changes state)", ["stats/clear", "health/reset"]],
    ["Gateway API (allowlist)", ["api/status", "api/site_info/site_name", "api/meters/site",
      "api/meters/solar", "api/sitemaster", "api/powerwalls", "api/system_status",
      "api/system/update/status", "api/site_info", "api/system_status/grid_faults", "api/operation",
      "api/site_info/grid_codes", "api/solars", "api/solars/brands", "api/customer", "api/meters",
      "api/installer", "api/networks", "api/system/networks", "api/meters/readings",
      "api/synchrometer/ct_voltage_references", "api/auth/toggle/supported", "api/solar_powerwall",
      "api/customer/registration"]],
    ["Control (read)", ["control/reserve", "control/mode", "control/grid_charging",
      "control/grid_export", "control/max_backup"]],
    ["TEDAPI (TEDAPI modes)", ["tedapi/config", "tedapi/status", "tedapi/components",
      "tedapi/battery", "tedapi/controller"]],
    ["Cloud / FleetAPI (cloud modes)", ["cloud/battery", "cloud/power", "cloud/config",
      "fleetapi/info", "fleetapi/status"]],
    ["pypowerwall (pw/)", ["pw/level", "pw/power", "pw/site", "pw/solar", "pw/battery", "pw/load",
      "pw/grid", "pw/home", "pw/battery_blocks", "pw/vitals", "pw/temps", "pw/strings", "pw/din",
      "pw/uptime", "pw/version", "pw/status", "pw/system_status", "pw/grid_status", "pw/aggregates",
      "pw/site_name", "pw/alerts", "pw/is_connected", "pw/get_reserve", "pw/get_mode",
      "pw/get_time_remaining"]]
  ];

  function $(id) { return document.getElementById(id); }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function obj(x) { return x !== null && typeof x === "object" && !Array.isArray(x) ? x : {}; }

  function has(x) { return x !== undefined && x !== null && x !== ""; }

  function duration(s) {
    if (!has(s) || !isFinite(Number(s))) return "—";
    s = Number(s);
    if (s < 60) return (s < 10 ? s.toFixed(1) : Math.round(s)) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.round((s % 86400) / 3600) + " h";
  }

  function show(x) {
    if (!has(x)) return "—";
    if (typeof x === "boolean") return x ? "yes" : "no";
    if (typeof x === "object") return JSON.stringify(x);
    return String(x);
  }

  function renderRoutes() {
    var list = $("route-list");
    ROUTES.forEach(function (group) {
      var box = el("div", null, "route-group");
      box.appendChild(el("h3", group[0]));
      var ul = el("ul");
      group[1].forEach(function (path) {
        var li = el("li");
        var a = el("a", "/" + path);
        a.href = PW.base + path;
        li.appendChild(a);
        ul.appendChild(li);
      });
      box.appendChild(ul);
      list.appendChild(box);
    });
  }

  // Cooldown: gateway.cooldown_remaining_seconds, a top-level "cooldown" (object,
  // seconds or boolean) or any transport's cooldown_remaining_seconds.
  function cooldownText(health) {
    var gw = obj(health.gateway);
    if (typeof gw.cooldown_remaining_seconds === "number") {
      if (gw.cooldown_remaining_seconds <= 0) return "none";
      return duration(gw.cooldown_remaining_seconds) + " left" +
        (gw.cooldown_strikes ? " (strike " + gw.cooldown_strikes + ")" : "");
    }
    var c = health.cooldown;
    if (typeof c === "number") return c > 0 ? duration(c) + " left" : "none";
    if (typeof c === "boolean") return c ? "active" : "none";
    if (c && typeof c === "object") {
      var left = c.remaining_seconds !== undefined ? c.remaining_seconds : c.cooldown_remaining_seconds;
      if (c.active === false || left === 0) return "none";
      if (has(left)) return duration(left) + " left" + (has(c.reason) ? " (" + c.reason + ")" : "");
      return show(c);
    }
    var parts = [];
    Object.keys(obj(health.transports)).forEach(function (name) {
      var t = obj(health.transports[name]);
      if (Number(t.cooldown_remaining_seconds) > 0) {
        parts.push(name + ": " + duration(t.cooldown_remaining_seconds) + " left");
      }
    });
    return parts.length ? parts.join(", ") : "none";
  }

  function fact(dl, label, value, cls) {
    dl.appendChild(el("dt", label));
    dl.appendChild(el("dd", value, cls));
  }

  function renderGateway(health, stats) {
    var dl = $("gateway-facts");
    dl.textContent = "";
    var conn = obj(health.connection_health);
    var fb = obj(health.fallback_mode);
    var gw = obj(health.gateway);
    fact(dl, "Mode", show(health.mode || stats.mode));
    if (has(gw.host)) fact(dl, "Host", show(gw.host));
    if (has(gw.connected)) fact(dl, "Connected", show(gw.connected), gw.connected ? "good" : "bad");
    if (has(gw.connection)) {
      fact(dl, "Connection", show(gw.connection) + (has(gw.connection_error) ? ": " + gw.connection_error : ""),
        gw.connection === "ok" ? "good" : gw.connection === "starting" ? "" : "bad");
    }
    if (has(gw.connect_error) && !has(gw.connection)) fact(dl, "Connect error", show(gw.connect_error), "bad");
    if (has(health.tedapi_mode)) fact(dl, "TEDAPI", show(health.tedapi_mode));
    if (has(stats.site_name)) fact(dl, "Site", show(stats.site_name));
    var cd = cooldownText(health);
    fact(dl, "Cooldown", cd, cd === "none" ? "good" : "warn");
    if (has(conn.last_success_age_seconds)) {
      fact(dl, "Last gateway answer", duration(conn.last_success_age_seconds) + " ago");
    }
    if (has(conn.consecutive_failures)) {
      fact(dl, "Failures in a row", show(conn.consecutive_failures),
        conn.consecutive_failures > 0 ? "warn" : "good");
    }
    if (has(conn.total_successes) || has(conn.total_failures)) {
      fact(dl, "Gateway ok / failed", show(conn.total_successes) + " / " + show(conn.total_failures));
    }
    if (fb.is_fallback_mode) {
      // The reference's name for "not connected yet": epoch seconds, shown as clock times.
      var clock = function (t) { return new Date(t * 1000).toLocaleTimeString(); };
      fact(dl, "Reconnecting", "since " + clock(fb.fallback_since) + (has(fb.next_attempt_at) ?
        ", next attempt " + clock(fb.next_attempt_at) : ""), "warn");
    }
    if (has(stats.uptime)) fact(dl, "Uptime", show(stats.uptime));
    if (has(health.startup_time)) {
      fact(dl, "Started", String(health.startup_time).replace("T", " ").replace(/\.\d+$/, ""));
    }
    if (has(stats.pypowerwall || health.pypowerwall)) {
      fact(dl, "Version", show(stats.pypowerwall || health.pypowerwall));
    }
  }

  // Counts are shown as they are; they are coloured only while the gateway is not healthy.
  // Answers served while it starts up, or a client's one bad request, are no problem of a
  // gateway whose /health says ok.
  function renderRequests(health, stats) {
    var ps = obj(health.proxy_stats);
    var troubled = health.status !== "ok";
    var counters = [
      ["GETs", has(stats.gets) ? stats.gets : ps.total_gets],
      ["POSTs", has(stats.posts) ? stats.posts : ps.total_posts],
      ["Errors", has(stats.errors) ? stats.errors : ps.total_errors],
      ["Timeouts", has(stats.timeout) ? stats.timeout : ps.total_timeouts]
    ];
    var box = $("counters");
    box.textContent = "";
    counters.forEach(function (c) {
      var d = el("div", null, "counter");
      var alarming = troubled && (c[0] === "Errors" || c[0] === "Timeouts") && c[1] > 0;
      d.appendChild(el("b", show(c[1]), alarming ? "warn" : ""));
      d.appendChild(el("span", c[0]));
      box.appendChild(d);
    });
    var uri = obj(stats.uri);
    var body = $("uri-table").tBodies[0];
    body.textContent = "";
    Object.keys(uri).sort(function (a, b) { return uri[b] - uri[a]; }).forEach(function (path) {
      var tr = el("tr");
      tr.appendChild(el("td", path));
      tr.appendChild(el("td", show(uri[path]), "num"));
      body.appendChild(tr);
    });
  }

  // An entry of an earlier window is no problem, even one that failed then: it is fetched
  // again when someone reads it. A failure of the current window is.
  function cacheState(e) {
    if (e.ok === false) {
      return el("td", "failed" + (e.is_expired ? " in an earlier window" : "") +
        (has(e.last_good_age_seconds) ? ", last good " + duration(e.last_good_age_seconds) + " ago" : ""),
        e.is_expired ? "muted" : "bad");
    }
    return e.is_expired ? el("td", "earlier window", "muted") : el("td", "fresh", "good");
  }

  function renderCache(health) {
    var cached = obj(health.cached_data);
    var entries = obj(cached.endpoints || cached.entries);
    var body = $("cache-table").tBodies[0];
    body.textContent = "";
    var keys = Object.keys(entries).sort();
    if (!keys.length) {
      var tr = el("tr");
      var td = el("td", "nothing cached yet", "muted");
      td.colSpan = 3;
      tr.appendChild(td);
      body.appendChild(tr);
    }
    keys.forEach(function (key) {
      var e = obj(entries[key]);
      var row = el("tr");
      row.appendChild(el("td", key));
      row.appendChild(el("td", duration(e.age_seconds), "num"));
      row.appendChild(cacheState(e));
      body.appendChild(row);
    });
  }

  function renderStatus(healthRes) {
    var health = obj(healthRes.body);
    var status = healthRes.status === 0 ? "unreachable" : (health.status || "unknown");
    var pill = $("status");
    pill.textContent = status;
    pill.setAttribute("data-status", status);
    $("mode").textContent = has(health.mode) ? String(health.mode) : "";
    var problem = $("problem");
    problem.setAttribute("data-level", status === "starting" ? "info" : "problem");
    if (healthRes.status === 0) {
      problem.textContent = "The proxy is not answering (" + healthRes.error + "). Retrying every " + interval + " s.";
    } else if (obj(health.gateway).connection_error) {
      // The connection state and what to change, as the log line and the 503 bodies say it.
      problem.textContent = "Gateway " + health.connection + ": " + health.gateway.connection_error;
    } else if (status === "degraded") {
      problem.textContent = "Gateway degraded: clients get last-good data or 503 until it answers again.";
    } else if (status === "starting") {
      problem.textContent = "Starting: the proxy is connecting to the gateway.";
    } else {
      problem.textContent = "";
    }
    problem.hidden = problem.textContent === "";
  }

  function link(href, text) {
    var a = el("a", text);
    a.href = PW.base + href;
    return a;
  }

  // Every gateway with its state and links: its flow page, data, health and stats.
  function renderGateways(res) {
    var body = $("gateway-table").tBodies[0];
    body.textContent = "";
    var list = Array.isArray(res.body) ? res.body : [];
    list.forEach(function (g) {
      var row = el("tr");
      row.setAttribute("data-gateway", String(g.id));
      row.appendChild(el("td", g.id));
      row.appendChild(el("td", g.name));
      var state = el("td", g.status + (g.error ? " — " + g.error : ""),
        g.status === "ok" ? "good" : g.status === "degraded" ? "bad" : "");
      row.appendChild(state);
      row.appendChild(el("td", g.mode));
      var links = el("td");
      var id = encodeURIComponent(g.id);
      [["?gw=" + id, "flow"], ["api/gateways/" + id + "/aggregates", "aggregates"],
       ["api/gateways/" + id + "/health", "health"], ["api/gateways/" + id + "/stats", "stats"]
      ].forEach(function (l, i) {
        if (i) links.appendChild(document.createTextNode(" · "));
        links.appendChild(link(l[0], l[1]));
      });
      row.appendChild(links);
      body.appendChild(row);
    });
    if (list.length > 1) {
      var tr = el("tr");
      tr.appendChild(el("td", "all"));
      tr.appendChild(el("td", "every gateway"));
      tr.appendChild(el("td", ""));
      tr.appendChild(el("td", ""));
      var td = el("td");
      td.appendChild(link("?gw=all", "flow"));
      td.appendChild(document.createTextNode(" · "));
      td.appendChild(link("api/aggregate", "aggregate"));
      tr.appendChild(td);
      body.appendChild(tr);
    }
  }

  function refresh() {
    PW.getJSON("api/gateways").then(renderGateways);
    Promise.all([PW.getJSON("health"), PW.getJSON("stats")]).then(function (r) {
      var health = obj(r[0].body);
      var stats = obj(r[1].body);
      renderStatus(r[0]);
      if (r[0].status !== 0) {
        renderGateway(health, stats);
        renderRequests(health, stats);
        renderCache(health);
        $("raw-health").textContent = JSON.stringify(r[0].body, null, 2);
      }
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    }).finally(function () {
      setTimeout(refresh, interval * 1000);
    });
  }

  // ---- live: the aggregate as pushed ----

  function kw(watts) { return typeof watts === "number" ? (watts / 1000).toFixed(2) + " kW" : "—"; }

  function renderLive(a, source) {
    var dl = $("live-facts");
    dl.textContent = "";
    $("live-source").textContent = source === "stream" ? "· streaming" : "· polling every " + interval + " s";
    $("live").setAttribute("data-source", source);
    if (!a || typeof a !== "object" || typeof a.error === "string") {
      fact(dl, "Data", a && a.error ? a.error : "none yet", "bad");
      return;
    }
    fact(dl, "Solar", kw(a.total_solar_power));
    fact(dl, "Home", kw(a.total_load_power));
    fact(dl, "Grid", kw(a.total_grid_power));
    fact(dl, "Battery", kw(a.total_battery_power));
    fact(dl, "Charge", typeof a.total_battery_percent === "number" ? a.total_battery_percent.toFixed(1) + " %" : "—");
    fact(dl, "Online", show(a.num_online) + " of " + show(a.num_gateways),
      a.num_online === a.num_gateways ? "good" : "bad");
    fact(dl, "Stale", show(a.stale), a.stale ? "bad" : "good");
    fact(dl, "Pushed", new Date().toLocaleTimeString());
  }

  var liveMode = "poll";
  var livePolling = false;
  var lastLive = null;

  function pollLive() {
    if (liveMode !== "poll") { livePolling = false; return; }
    livePolling = true;
    PW.getJSON("api/aggregate").then(function (res) {
      if (liveMode === "poll") renderLive(res.body || { error: res.error }, "poll");
    }).finally(function () {
      if (liveMode === "poll") setTimeout(pollLive, interval * 1000);
      else livePolling = false;
    });
  }

  PW.live("events", function (body) {
    lastLive = body;
    renderLive(body, "stream");
  }, function (next) {
    liveMode = next;
    if (next === "poll" && !livePolling) pollLive();
    if (next === "stream" && lastLive) renderLive(lastLive, "stream");
  });

  renderRoutes();
  refresh();
})();
