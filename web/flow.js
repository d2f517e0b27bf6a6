/* Power-flow animation: follows the proxy's live stream (server-sent events: the gateway's
   /api/gateways/{id} object, or the /api/aggregate object with ?gw=all) and draws it. When the
   stream is not available (refused, or lost while it reconnects) it polls the JSON routes
   every ?interval= seconds instead; ?stream=off always polls. data-source on the <svg> says
   which ("stream" or "poll").

   State shown (data-state on the <svg>):
     loading      before the first answer
     fresh        /aggregates answered 200 and nothing was marked stale
     stale        the proxy served a last-good copy (X-Cache: STALE): values greyed,
                  no motion, banner with the data's age
     unavailable  /aggregates answered an error (503 ...) or the proxy could not be
                  reached: every value replaced by "—", banner
   Grid (data-grid): up | down (outage) | syncing | unknown, from
   api/system_status/grid_status, mapped as pypowerwall's grid_status() does.

   State of charge: the Tesla-app scale, i.e. api/system_status/soe
   (= raw /soe / 0.95 - 5 / 0.95), so the wall tablet agrees with the phone.
   The reserve is shown on the same scale (raw api/operation value scaled like
   pypowerwall's get_reserve()). */
(function () {
  "use strict";

  var SVGNS = "http://www.w3.org/2000/svg";
  var IDLE_W = 10; // below this many watts a flow counts as idle
  var interval = PW.seconds("interval", 5, 0.5, 3600);
  var svg = document.getElementById("flow");
  var solarOnly = PW.style === "solar";

  var GRID_STATES = {
    SystemGridConnected: "up",
    SystemIslandedActive: "down",
    SystemMicroGridFaulted: "down",
    SystemWaitForUser: "down",
    SystemTransitionToGrid: "syncing",
    SystemTransitionToIsland: "syncing",
    SystemIslandedReady: "syncing"
  };

  // One entry per spoke. Each SVG path points the way positive power flows.
  var flows = {};
  ["solar", "grid", "home", "battery"].forEach(function (name) {
    flows[name] = { el: document.getElementById("flow-" + name), speed: 0, offset: 0 };
  });

  function $(id) { return document.getElementById(id); }

  function num(x) { return typeof x === "number" && isFinite(x) ? x : null; }

  function power(agg, meter) {
    return agg[meter] && typeof agg[meter] === "object" ? num(agg[meter].instant_power) : null;
  }

  function appScale(raw) { return raw === null ? null : Math.max(0, raw / 0.95 - 5 / 0.95); }

  function clampPct(p) { return Math.min(100, Math.max(0, p)); }

  // "3.2 kW" (value as text, unit in a smaller tspan); "—" when unknown.
  function setPower(id, watts) {
    var el = $(id);
    if (watts === null) { el.textContent = "—"; return; }
    el.textContent = (Math.abs(watts) / 1000).toFixed(1);
    var unit = document.createElementNS(SVGNS, "tspan");
    unit.setAttribute("class", "unit");
    unit.textContent = " kW";
    el.appendChild(unit);
  }

  function setText(id, text) { $(id).textContent = text; }

  // Dots per second along the spoke: visible at a few watts, fast at 10 kW.
  function speedFor(watts) {
    if (watts === null || Math.abs(watts) < IDLE_W) return 0;
    var s = 14 + 26 * Math.log(1 + Math.abs(watts) / 400) / Math.LN2;
    return watts > 0 ? s : -s;
  }

  function setFlow(name, watts) {
    var f = flows[name];
    f.speed = speedFor(watts);
    f.el.classList.toggle("active", f.speed !== 0);
  }

  function direction(watts, positive, negative, idle) {
    if (watts === null) return "";
    if (watts >= IDLE_W) return positive;
    if (watts <= -IDLE_W) return negative;
    return idle;
  }

  function renderBattery(batteryW, soc, reserve) {
    setPower("battery-value", batteryW);
    setText("battery-status", direction(batteryW, "discharging", "charging", "standby"));
    setText("soc-value", soc === null ? "—" : Math.round(clampPct(soc)) + "%");
    setText("reserve-value", "reserve " + (reserve === null ? "—" : Math.round(clampPct(reserve)) + "%"));
    var fill = soc === null ? 0 : 34 * clampPct(soc) / 100;
    $("soc-fill").setAttribute("y", String(17 - fill));
    $("soc-fill").setAttribute("height", String(fill));
    var mark = reserve === null ? null : 17 - 34 * clampPct(reserve) / 100;
    $("reserve-mark").setAttribute("d", mark === null ? "" : "M-13 " + mark + " H13");
    var low = soc !== null && reserve !== null && soc <= reserve;
    $("node-battery").classList.toggle("low", low);
    $("soc-value").classList.toggle("low", low);
  }

  function renderUnavailable(agg) {
    ["solar-value", "grid-value", "home-value"].forEach(function (id) { setPower(id, null); });
    renderBattery(null, null, null);
    setText("grid-status", "");
    Object.keys(flows).forEach(function (name) { setFlow(name, null); });
    svg.setAttribute("data-grid", "unknown");
    var proxyDown = agg.status === 0;
    setText("banner-text", proxyDown ? "PROXY UNREACHABLE" : "GATEWAY UNAVAILABLE");
    var reason = (agg.error || "no data").slice(0, 60);
    setText("detail", reason + (mode === "stream" ? " — waiting for the gateway"
      : " — retrying every " + interval + " s"));
  }

  function gridState(res) {
    if (!res.ok || typeof res.body.grid_status !== "string") return "unknown";
    return GRID_STATES[res.body.grid_status] || "unknown";
  }

  function render(agg, soe, grid, op) {
    if (!agg.ok) {
      svg.setAttribute("data-state", "unavailable");
      renderUnavailable(agg);
      return;
    }
    var stale = [agg, soe, grid, op].filter(function (r) { return r.ok && r.stale; });
    var state = stale.length ? "stale" : "fresh";
    var a = agg.body;
    var site = power(a, "site");
    var gstate = gridState(grid);

    setPower("solar-value", power(a, "solar"));
    setPower("home-value", power(a, "load"));
    setPower("grid-value", site);
    setText("grid-status", gstate === "down" ? "OFF-GRID" :
      gstate === "syncing" ? "reconnecting" : direction(site, "importing", "exporting", "idle"));

    var soc = soe.ok ? num(soe.body.percentage) : null;
    var reserve = op.ok ? appScale(num(op.body.backup_reserve_percent)) : null;
    renderBattery(power(a, "battery"), soc, reserve);

    setFlow("solar", power(a, "solar"));
    setFlow("grid", site);
    setFlow("home", power(a, "load"));
    setFlow("battery", power(a, "battery"));

    var banner = gstate === "down" ? "GRID OUTAGE" : gstate === "syncing" ? "GRID RECONNECTING" : "";
    var detail = gstate === "down" ? (solarOnly ? "grid down — home running on solar only"
      : "grid down — home running on Powerwall") : "";
    if (state === "stale") {
      var age = Math.max.apply(null, stale.map(function (r) { return r.age || 0; }));
      banner = banner ? banner + " · STALE DATA" : "DATA STALE";
      var known = stale.some(function (r) { return typeof r.age === "number"; });
      detail = known ? "gateway not answering — showing data " + Math.round(age) + " s old"
        : "gateway not answering — showing the last good data";
    }
    setText("banner-text", banner);
    setText("detail", detail);
    svg.setAttribute("data-grid", gstate);
    svg.setAttribute("data-state", state);
  }

  // A route this proxy does not have (404, e.g. a mode without it) is not asked again.
  var absent = {};
  function get(path, timeout) {
    if (absent[path]) return Promise.resolve({ ok: false, status: 404, error: "not available" });
    return PW.getJSON(path, timeout).then(function (res) {
      if (res.status === 404 && !/aggregate/.test(path)) absent[path] = true;
      return res;
    });
  }

  // ?gw=ID: one gateway of several (its routes under api/gateways/ID/); ?gw=all: the sum.
  var gw = PW.param("gw");
  var prefix = gw && gw !== "all" ? "api/gateways/" + encodeURIComponent(gw) + "/" : "";

  // The aggregate in the shapes render() reads: meters, app-scale SOE, grid status.
  var AGG_GRID = { UP: "SystemGridConnected", DOWN: "SystemIslandedActive",
                   SYNCING: "SystemTransitionToGrid" };
  function fromAggregate(res) {
    if (!res.ok) return [res, res, res, { ok: false }];
    var a = res.body, part = function (body) {
      return { ok: true, status: 200, stale: !!a.stale, age: res.age, body: body };
    };
    var meters = {};
    [["site", "total_site_power"], ["solar", "total_solar_power"], ["load", "total_load_power"],
     ["battery", "total_battery_power"]].forEach(function (m) {
      meters[m[0]] = { instant_power: a[m[1]] };
    });
    var soc = typeof a.total_battery_percent === "number" ? appScale(a.total_battery_percent) : null;
    return [part(meters), part({ percentage: soc }), part({ grid_status: AGG_GRID[a.grid_status] }),
            { ok: false }];
  }

  function fetchAll(timeout) {
    if (gw === "all") return get("api/aggregate", timeout).then(fromAggregate);
    return Promise.all([
      get(prefix + "aggregates", timeout),
      get(prefix + "api/system_status/soe", timeout),
      get(prefix + "api/system_status/grid_status", timeout),
      get(prefix + "api/operation", timeout)
    ]);
  }

  // A pushed /api/aggregate or /api/gateways/{id} object in the shapes render() reads.
  function unavailable(error) { return { ok: false, status: 503, error: error || "gateway unavailable" }; }

  function fromPushedAggregate(a) {
    if (a.total_load_power === null && a.total_solar_power === null && a.total_site_power === null) {
      var down = unavailable("no gateway has data");
      return [down, down, down, { ok: false }];
    }
    return fromAggregate({ ok: true, status: 200, stale: !!a.stale, age: null, body: a });
  }

  function fromPushedGateway(g) {
    var d = g && typeof g.data === "object" && g.data ? g.data : null;
    if (!d || (d.load_power === null && d.site_power === null && d.solar_power === null)) {
      var down = unavailable((d && d.error) || (g && g.error));
      return [down, down, down];
    }
    var age = typeof g.last_updated === "number" ? Math.max(0, Date.now() / 1000 - g.last_updated) : null;
    var part = function (body) { return { ok: true, status: 200, stale: !!d.stale, age: age, body: body }; };
    var soc = typeof d.battery_percent === "number" ? appScale(d.battery_percent) : null;
    return [part({ site: { instant_power: d.site_power }, solar: { instant_power: d.solar_power },
                   load: { instant_power: d.load_power }, battery: { instant_power: d.battery_power } }),
            part({ percentage: soc }), part({ grid_status: AGG_GRID[d.grid_status] })];
  }

  var mode = "poll"; // "stream": pushes draw the page; "poll": the timer does
  var polling = false;
  var pushed = null; // the last pushed object
  var reserve = { ok: false }; // api/operation, read now and then while streaming

  function drawPushed() {
    if (pushed === null) return;
    var r = gw === "all" ? fromPushedAggregate(pushed) : fromPushedGateway(pushed);
    render(r[0], r[1], r[2], gw === "all" ? { ok: false } : reserve);
  }

  function onPush(body) {
    pushed = body;
    drawPushed();
    svg.setAttribute("data-updated", String(Date.now()));
  }

  function poll() {
    if (mode !== "poll") { polling = false; return; }
    polling = true;
    var timeout = Math.max(4000, Math.min(interval * 1000, 15000));
    fetchAll(timeout).then(function (r) {
      if (mode !== "poll") return; // the stream came back meanwhile: it is as fresh
      render(r[0], r[1], r[2], r[3]);
      svg.setAttribute("data-updated", String(Date.now()));
    }).finally(function () {
      if (mode === "poll") setTimeout(poll, interval * 1000);
      else polling = false;
    });
  }

  function setMode(next) {
    mode = next;
    svg.setAttribute("data-source", next);
    if (next === "poll" && !polling) poll();
  }

  // The reserve is not in the stream: it changes only when someone sets it.
  function readReserve() {
    if (mode === "stream" && gw !== "all") {
      get(prefix + "api/operation", 8000).then(function (res) { reserve = res; drawPushed(); });
    }
  }

  function follow() {
    var id = gw && gw !== "all" ? gw : PW.gateway;
    if (gw !== "all" && !id) { setMode("poll"); return; }
    PW.live(gw === "all" ? "events" : "events?gw=" + encodeURIComponent(id), onPush, function (next) {
      var was = mode;
      setMode(next);
      if (next === "stream" && was !== "stream") readReserve();
    });
    setInterval(readReserve, 60000);
    // A stale copy's age keeps growing while nothing new is pushed.
    setInterval(function () {
      if (mode === "stream" && svg.getAttribute("data-state") === "stale") drawPushed();
    }, 1000);
  }

  // Moving dots: shift each spoke's dash pattern by its speed. Only while the
  // data is fresh: stale or missing data must not look alive.
  var last = null;
  function animate(now) {
    var dt = last === null ? 0 : Math.min(0.1, (now - last) / 1000);
    last = now;
    if (svg.getAttribute("data-state") === "fresh") {
      Object.keys(flows).forEach(function (name) {
        var f = flows[name];
        if (!f.speed) return;
        f.offset = (f.offset - f.speed * dt) % 13; // one dash period
        f.el.style.strokeDashoffset = f.offset.toFixed(2);
      });
    }
    window.requestAnimationFrame(animate);
  }

  if (solarOnly) {
    // No Powerwall: crop the empty bottom row.
    svg.setAttribute("viewBox", "0 0 400 340");
    $("detail").setAttribute("y", "334");
  }
  setText("banner-text", "CONNECTING…");
  follow();
  if (!window.matchMedia("(prefers-reduced-motion: reduce)").matches) {
    window.requestAnimationFrame(animate);
  }
})();
