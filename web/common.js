/* Shared by index.html and console.html: base URL, style choice, JSON fetch.
   Load it early in <body>: the proxy injects <meta name="pw-base-url">,
   <meta name="pw-style"> and <link id="pw-style"> just before </head>. */
(function () {
  "use strict";

  var STYLES = ["clear", "black", "white", "grafana", "grafana-dark", "dakboard", "solar"];
  var TRANSPARENT = ["clear", "solar"]; // made to sit over whatever the embedding page shows

  function meta(name) {
    var el = document.querySelector('meta[name="' + name + '"]');
    return el ? el.getAttribute("content") : null;
  }

  function param(name) {
    return new URLSearchParams(window.location.search).get(name);
  }

  // PROXY_BASE_URL as the proxy announced it; without the meta tag (page served
  // some other way) fall back to the directory of this page.
  function baseUrl() {
    var base = meta("pw-base-url") || window.location.pathname.replace(/[^/]*$/, "");
    return base.charAt(base.length - 1) === "/" ? base : base + "/";
  }

  var base = baseUrl();

  // ?style=NAME (one of the seven) beats PW_STYLE; anything else is ignored.
  function styleName() {
    var wanted = param("style");
    if (STYLES.indexOf(wanted) >= 0) return wanted;
    var configured = meta("pw-style");
    return STYLES.indexOf(configured) >= 0 ? configured : "clear";
  }

  function stylesheet(id, href) {
    var link = document.getElementById(id);
    if (!link) {
      link = document.createElement("link");
      link.id = id;
      link.rel = "stylesheet";
      document.head.appendChild(link);
    }
    if (link.getAttribute("href") !== href) link.setAttribute("href", href);
  }

  // Inside a frame (Dakboard, Grafana, MagicMirror) a transparent style shows the embedding
  // page through it. Alone in a tab there is nothing behind it but the browser's white
  // canvas, so the page gets a backdrop of its own (styles/backdrop.css), unless
  // ?backdrop=none asks for transparency anyway (e.g. a browser source in a video mixer).
  function framed() {
    try { return window.self !== window.top; } catch (e) { return true; }
  }

  function applyStyle() {
    var name = styleName();
    stylesheet("pw-style", base + "styles/" + name + ".css");
    var own = TRANSPARENT.indexOf(name) >= 0 && !framed() && param("backdrop") !== "none";
    if (own) stylesheet("pw-backdrop", base + "styles/backdrop.css");
    document.documentElement.setAttribute("data-style", name);
    document.documentElement.setAttribute("data-backdrop", own ? "own" : "none");
    return name;
  }

  // Seconds from a query parameter, clamped; fallback when absent or invalid.
  function seconds(name, fallback, min, max) {
    var v = parseFloat(param(name));
    if (!isFinite(v)) return fallback;
    return Math.min(max, Math.max(min, v));
  }

  /* GET BASE+path. Never throws; resolves to
     {ok, status, stale, age, body, error}:
       ok     - HTTP 2xx with a JSON object body that is not {"error": ...}
       status - HTTP status, 0 when the proxy itself could not be reached
       stale  - the proxy marked it "X-Cache: STALE" (last good copy)
       age    - the Age header in seconds, or null
       body   - parsed JSON (also for error statuses), or null */
  function getJSON(path, timeoutMs) {
    var ctrl = new AbortController();
    var timer = setTimeout(function () { ctrl.abort(); }, timeoutMs || 8000);
    var res = { path: path, ok: false, status: 0, stale: false, age: null, body: null, error: "" };
    return fetch(base + path, {
      cache: "no-store",
      signal: ctrl.signal,
      headers: { Accept: "application/json" }
    }).then(function (r) {
      res.status = r.status;
      res.stale = (r.headers.get("X-Cache") || "").toUpperCase() === "STALE";
      var age = r.headers.get("Age");
      res.age = age === null || age === "" || !isFinite(Number(age)) ? null : Number(age);
      return r.text();
    }).then(function (text) {
      try { res.body = JSON.parse(text); } catch (e) { res.body = null; }
      var isObject = res.body !== null && typeof res.body === "object";
      if (res.status < 200 || res.status > 299) {
        res.error = (isObject && typeof res.body.error === "string") ? res.body.error : "HTTP " + res.status;
      } else if (!isObject) {
        res.error = "no data";
      } else if (typeof res.body.error === "string") {
        res.error = res.body.error;
      } else {
        res.ok = true;
      }
      return res;
    }).catch(function (e) {
      res.error = e && e.name === "AbortError" ? "no answer from the proxy" : "proxy unreachable";
      return res;
    }).finally(function () {
      clearTimeout(timer);
    });
  }

  /* Live updates from the proxy's event stream (BASE+path, text/event-stream).
     onData(body) gets each pushed snapshot (parsed JSON); onMode("stream" | "poll") says how
     the page should get its data: "poll" whenever the stream is not open - refused (404, 503:
     streams off or at their limit), or the connection lost while EventSource reconnects by
     itself - and "stream" again once it is open. A refused stream is tried again every
     `retryMs`. Without EventSource, or with ?stream=off, onMode("poll") once and nothing else. */
  function live(path, onData, onMode, retryMs) {
    if (!window.EventSource || param("stream") === "off") {
      onMode("poll");
      return;
    }
    var source = null;
    function open() {
      source = new EventSource(base + path);
      source.onopen = function () { onMode("stream"); };
      source.onmessage = function (event) {
        var body;
        try { body = JSON.parse(event.data); } catch (e) { return; }
        onData(body);
      };
      source.onerror = function () {
        onMode("poll");
        if (source.readyState === EventSource.CLOSED) {
          source.close();
          setTimeout(open, retryMs || 30000);
        }
      };
    }
    open();
  }

  window.PW = {
    STYLES: STYLES,
    base: base,
    gateway: meta("pw-gateway"),
    param: param,
    seconds: seconds,
    style: applyStyle(),
    getJSON: getJSON,
    live: live
  };
})();
