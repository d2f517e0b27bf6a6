/* History page: power and battery level over a day, a week or a month, daily energy bars and
   the events, read from api/history, api/history/energy and api/events. Drag across the power
   or battery chart to zoom into that stretch; "Reset zoom" goes back. ?gw=ID for one gateway
   (default: the default gateway), ?gw=all for all added up; ?range=day|week|month to start
   with. The charts are SVG drawn here, sized to their box so text stays crisp, redrawn when
   the window changes size. Every value goes in via textContent or attributes. */
(function () {
  "use strict";

  var SPANS = { day: 86400, week: 7 * 86400, month: 30 * 86400 };
  var BAR_DAYS = { day: 7, week: 7, month: 30 };
  var POWERS = [["solar_power", "solar"], ["load_power", "home"], ["battery_power", "battery"],
    ["grid_power", "grid"]];
  var POINTS = POWERS.map(function (p) { return p[0]; }).concat(["battery_level"]);
  var BARS = [["solar_exported", "solar", "solar"], ["load_imported", "home", "home"],
    ["site_imported", "grid", "from grid"], ["site_exported", "export", "to grid"]];
  var KINDS = {
    grid_down: "Grid down", grid_up: "Grid back", firmware_changed: "Firmware changed",
    alert_raised: "Alert", alert_cleared: "Alert cleared", mode_changed: "Mode changed",
    reserve_changed: "Reserve changed", gateway_unreachable: "Gateway unreachable",
    gateway_back: "Gateway back"
  };
  var SVG = "http://www.w3.org/2000/svg";
  var PAD = { top: 8, right: 8, bottom: 20, left: 52 };

  var wanted = PW.param("gw") || "";
  var gw = wanted || PW.gateway || "";
  var range = SPANS[PW.param("range")] ? PW.param("range") : "day";
  var zoom = null; // [from, to] while zoomed in
  var last = null; // what was drawn last, for redrawing on resize
  var root = $("history");

  function $(id) { return document.getElementById(id); }

  function node(tag, attrs, parent) {
    var e = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    if (parent) parent.appendChild(e);
    return e;
  }

  function el(tag, text) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function query(params) {
    var q = new URLSearchParams();
    if (gw) q.set("gw", gw);
    Object.keys(params).forEach(function (k) { q.set(k, String(params[k])); });
    return q.toString();
  }

  function span() {
    var now = Math.floor(Date.now() / 1000) + 1; // the API's "to" is exclusive: this very second too
    return zoom || [now - SPANS[range], now];
  }

  // ---- loading ---------------------------------------------------------------------------

  function load() {
    var s = span();
    var step = Math.max(1, Math.ceil((s[1] - s[0]) / 1200));
    var days = zoom ? Math.max(1, Math.ceil((s[1] - s[0]) / 86400)) : BAR_DAYS[range];
    var eventQuery = gw === "all" ? new URLSearchParams({ from: s[0], to: s[1] }).toString()
      : query({ from: s[0], to: s[1] });
    root.setAttribute("data-state", "loading");
    Promise.all([
      PW.getJSON("api/history?" + query({ points: POINTS.join(","), from: s[0], to: s[1], step: step })),
      PW.getJSON("api/history/energy?" + query({ from: s[1] - days * 86400, to: s[1] })),
      PW.getJSON("api/events?" + eventQuery)
    ]).then(function (answers) { show(s, answers[0], answers[1], answers[2]); });
  }

  function show(s, history, energy, events) {
    var failed = [history, energy, events].filter(function (r) { return !r.ok; })[0];
    var problem = $("problem");
    if (failed) {
      problem.textContent = failed.status === 404 && /History is off/.test(failed.error)
        ? "The history is off on this proxy (PW_HISTORY=no)." : "History unavailable: " + failed.error;
      problem.hidden = false;
      root.setAttribute("data-state", failed.status === 404 ? "off" : "error");
      return;
    }
    problem.hidden = true;
    last = { span: s, history: history.body, energy: energy.body, events: events.body.events || [] };
    draw();
    root.setAttribute("data-state", "ready");
  }

  function draw() {
    if (!last) return;
    var outages = outagesOf(last.events, last.span);
    drawPower(last.span, last.history, outages);
    drawLevel(last.span, last.history, outages);
    drawEnergy(last.energy);
    drawEvents(last.events);
    $("span").textContent = when(last.span[0]) + " – " + when(last.span[1]);
    $("gateway").textContent = gw === "all" ? "all gateways" : gw ? "gateway " + gw : "";
  }

  // ---- charts ------------------------------------------------------------------------------

  function frame(svg) {
    var w = Math.max(100, Math.round(svg.clientWidth || 1000));
    var h = Math.max(60, Math.round(svg.clientHeight || 200));
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.textContent = "";
    return { w: w, h: h, x0: PAD.left, x1: w - PAD.right, y0: PAD.top, y1: h - PAD.bottom };
  }

  function scaleX(f, s) {
    return function (t) { return f.x0 + (t - s[0]) / (s[1] - s[0]) * (f.x1 - f.x0); };
  }

  function scaleY(f, lo, hi) {
    return function (v) { return f.y1 - (v - lo) / (hi - lo) * (f.y1 - f.y0); };
  }

  function column(body, name) {
    return (body.columns || []).indexOf(name);
  }

  // One path per series; a gap of more than three steps (no data) breaks the line.
  function linePath(rows, index, x, y, step) {
    var d = "";
    var prev = null;
    rows.forEach(function (row) {
      var v = row[index];
      if (typeof v !== "number") { prev = null; return; }
      var cmd = prev !== null && row[0] - prev <= 3 * step ? "L" : "M";
      d += cmd + x(row[0]).toFixed(1) + " " + y(v).toFixed(1);
      prev = row[0];
    });
    return d;
  }

  function ticks(lo, hi, count) {
    var raw = (hi - lo) / count;
    var mag = Math.pow(10, Math.floor(Math.log10(raw || 1)));
    var step = [1, 2, 5, 10].map(function (m) { return m * mag; }).filter(function (s) { return s >= raw; })[0];
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(v);
    return out;
  }

  function grid(svg, f, y, values, label) {
    values.forEach(function (v) {
      node("line", { x1: f.x0, x2: f.x1, y1: y(v), y2: y(v), "class": v === 0 ? "zero" : "gridline" }, svg);
      var text = node("text", { x: f.x0 - 6, y: y(v) + 4, "text-anchor": "end" }, svg);
      text.textContent = label(v);
    });
  }

  function timeAxis(svg, f, s) {
    var x = scaleX(f, s);
    for (var i = 0; i <= 4; i++) {
      var t = s[0] + (s[1] - s[0]) * i / 4;
      var text = node("text", { x: x(t), y: f.h - 4, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, svg);
      text.textContent = when(t, s[1] - s[0] > 2 * 86400);
    }
  }

  function shade(svg, f, s, outages) {
    var x = scaleX(f, s);
    outages.forEach(function (o) {
      node("rect", { x: x(o[0]), y: f.y0, width: Math.max(1, x(o[1]) - x(o[0])), height: f.y1 - f.y0,
        "class": "outage" }, svg).appendChild(titled("Grid down"));
    });
  }

  function titled(text) {
    var t = document.createElementNS(SVG, "title");
    t.textContent = text;
    return t;
  }

  function drawPower(s, body, outages) {
    var svg = $("power");
    var f = frame(svg);
    var rows = body.rows || [];
    var values = [0];
    POWERS.forEach(function (p) {
      var i = column(body, p[0]);
      rows.forEach(function (r) { if (typeof r[i] === "number") values.push(r[i]); });
    });
    var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
    if (hi - lo < 100) hi = lo + 100;
    var y = scaleY(f, lo, hi), x = scaleX(f, s);
    shade(svg, f, s, outages);
    grid(svg, f, y, ticks(lo, hi, 4), function (v) { return (v / 1000).toFixed(Math.abs(hi - lo) < 2000 ? 1 : 0) + " kW"; });
    POWERS.forEach(function (p) {
      var cls = "line " + p[1] + (p[1] === "battery" ? " pw-battery" : "");
      node("path", { d: linePath(rows, column(body, p[0]), x, y, body.step || 1), "class": cls,
        "data-series": p[0] }, svg);
    });
    timeAxis(svg, f, s);
    svg.setAttribute("data-rows", rows.length);
    svg.setAttribute("data-step", body.step || "");
  }

  function drawLevel(s, body, outages) {
    var svg = $("level");
    var f = frame(svg);
    var rows = body.rows || [];
    var i = column(body, "battery_level");
    var y = scaleY(f, 0, 100), x = scaleX(f, s);
    shade(svg, f, s, outages);
    grid(svg, f, y, [0, 50, 100], function (v) { return v + "%"; });
    var d = linePath(rows, i, x, y, body.step || 1);
    node("path", { d: d, "class": "area level" }, svg);
    timeAxis(svg, f, s);
    var levels = rows.filter(function (r) { return typeof r[i] === "number"; });
    svg.setAttribute("data-last", levels.length ? levels[levels.length - 1][i] : "");
  }

  function drawEnergy(body) {
    var svg = $("energy");
    var f = frame(svg);
    var rows = body.rows || [];
    var hi = 1;
    rows.forEach(function (r) {
      BARS.forEach(function (b) { var v = r[column(body, b[0])]; if (typeof v === "number") hi = Math.max(hi, v); });
    });
    var y = scaleY(f, 0, hi);
    grid(svg, f, y, ticks(0, hi, 3), function (v) { return v + " kWh"; });
    var slot = (f.x1 - f.x0) / Math.max(1, rows.length);
    var bar = Math.max(1, slot * 0.8 / BARS.length);
    rows.forEach(function (r, n) {
      BARS.forEach(function (b, k) {
        var v = r[column(body, b[0])];
        if (typeof v !== "number") return;
        var rect = node("rect", { x: f.x0 + n * slot + slot * 0.1 + k * bar, y: y(v), width: bar,
          height: Math.max(0, f.y1 - y(v)), "class": "bar " + b[1], "data-day": r[0] }, svg);
        rect.appendChild(titled(r[0] + " " + b[2] + ": " + v.toFixed(2) + " kWh"));
      });
      if (rows.length <= 14 || n % Math.ceil(rows.length / 10) === 0) {
        var text = node("text", { x: f.x0 + (n + 0.5) * slot, y: f.h - 4, "text-anchor": "middle" }, svg);
        text.textContent = String(r[0]).slice(5);
      }
    });
    svg.setAttribute("data-days", rows.length);
  }

  // ---- events --------------------------------------------------------------------------

  function outagesOf(events, s) {
    var out = [], start = null;
    events.forEach(function (e) {
      if (e.kind === "grid_down") start = e.time;
      if (e.kind === "grid_up") { out.push([start === null ? s[0] : start, e.time]); start = null; }
    });
    if (start !== null) out.push([start, s[1]]);
    return out;
  }

  function detail(e) {
    var d = e.detail || {};
    if (typeof d.duration_seconds === "number") return "after " + duration(d.duration_seconds);
    if (d.old !== undefined) return d.old + " → " + d.new + (d.by ? " (by " + d.by + ")" : "");
    if (d.alert) return d.alert;
    if (d.error) return d.error;
    return "";
  }

  function drawEvents(events) {
    var body = $("events").tBodies[0];
    body.textContent = "";
    events.slice().reverse().forEach(function (e) {
      var tr = el("tr");
      tr.setAttribute("data-kind", e.kind);
      [when(e.time, true), e.gw, KINDS[e.kind] || e.kind, detail(e)].forEach(function (v) {
        tr.appendChild(el("td", v));
      });
      body.appendChild(tr);
    });
    $("no-events").hidden = events.length > 0;
  }

  // ---- words ---------------------------------------------------------------------------

  function when(t, withDate) {
    var d = new Date(t * 1000);
    var time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return withDate === false ? time : d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + time;
  }

  function duration(s) {
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
  }

  // ---- zoom: drag across a time chart ----------------------------------------------------

  function zoomable(svg) {
    var start = null, box = null;
    function at(ev) {
      var r = svg.getBoundingClientRect();
      return Math.min(Math.max(ev.clientX - r.left, PAD.left), r.width - PAD.right);
    }
    svg.addEventListener("pointerdown", function (ev) {
      if (!last) return;
      start = at(ev);
      box = node("rect", { x: start, y: 0, width: 0, height: svg.clientHeight, "class": "selection" }, svg);
    });
    svg.addEventListener("pointermove", function (ev) {
      if (start === null) return;
      var x = at(ev);
      box.setAttribute("x", Math.min(start, x));
      box.setAttribute("width", Math.abs(x - start));
    });
    svg.addEventListener("pointerup", function (ev) {
      if (start === null) return;
      var a = Math.min(start, at(ev)), b = Math.max(start, at(ev));
      start = null;
      if (b - a < 5) { draw(); return; }
      var f = { x0: PAD.left, x1: svg.clientWidth - PAD.right };
      var s = last.span;
      var t = function (px) { return s[0] + (px - f.x0) / (f.x1 - f.x0) * (s[1] - s[0]); };
      zoom = [Math.floor(t(a)), Math.ceil(t(b))];
      $("reset").hidden = false;
      load();
    });
  }

  function pick(name) {
    range = name;
    zoom = null;
    $("reset").hidden = true;
    Array.prototype.forEach.call($("ranges").querySelectorAll("[data-range]"), function (b) {
      b.setAttribute("aria-pressed", b.getAttribute("data-range") === name ? "true" : "false");
    });
    load();
  }

  Array.prototype.forEach.call($("ranges").querySelectorAll("[data-range]"), function (b) {
    b.addEventListener("click", function () { pick(b.getAttribute("data-range")); });
  });
  $("reset").addEventListener("click", function () { pick(range); });
  zoomable($("power"));
  zoomable($("level"));
  window.addEventListener("resize", draw);
  pick(range);
  setInterval(function () { if (!zoom) load(); }, 60000);
})();
