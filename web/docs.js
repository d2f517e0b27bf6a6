/* The API documentation page: reads BASE/openapi.json (the proxy's own, generated from its
   route table) and lists every path, method, parameter, response and shape. Nothing is
   fetched from anywhere but the proxy. */
(function () {
  "use strict";

  var MOUNT = "/api/gateways/{id}";
  var METHODS = ["get", "post", "head", "options"];
  var spec = null;

  function $(id) { return document.getElementById(id); }

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== null && text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function add(parent) {
    for (var i = 1; i < arguments.length; i++) {
      var child = arguments[i];
      if (child) parent.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return parent;
  }

  /* A response or header given as {"$ref": "#/components/..."}: the object it names. */
  function deref(obj) {
    var ref = obj && obj.$ref;
    if (typeof ref !== "string" || ref.indexOf("#/") !== 0 || ref.indexOf("#/components/schemas/") === 0) {
      return obj;
    }
    return ref.slice(2).split("/").reduce(function (node, key) { return node ? node[key] : null; }, spec) || obj;
  }

  function refName(schema) {
    var ref = schema && schema.$ref;
    return typeof ref === "string" ? ref.split("/").pop() : null;
  }

  /* A short type text: "number | null", "array of string", a link to a named shape. */
  function typeNode(schema) {
    var span = el("span", null, "type");
    var name = refName(schema);
    if (name) {
      var a = el("a", name);
      a.href = "#schema-" + name;
      return add(span, a);
    }
    if (!schema || typeof schema !== "object" || Object.keys(schema).length === 0) {
      return add(span, "any JSON");
    }
    var alts = schema.anyOf || schema.oneOf;
    if (alts) {
      alts.forEach(function (alt, i) { add(span, i ? " | " : null, typeNode(alt)); });
      return span;
    }
    if (schema.allOf) {
      schema.allOf.forEach(function (part, i) { add(span, i ? " & " : null, typeNode(part)); });
      return span;
    }
    if (schema.enum) return add(span, schema.enum.map(JSON.stringify).join(" | "));
    if (schema.const !== undefined) return add(span, JSON.stringify(schema.const));
    var types = [].concat(schema.type || "any");
    types.forEach(function (t, i) {
      add(span, i ? " | " : null);
      if (t === "array" && schema.items) add(span, "array of ", typeNode(schema.items));
      else if (t === "object" && schema.additionalProperties && typeof schema.additionalProperties === "object")
        add(span, "object of ", typeNode(schema.additionalProperties));
      else add(span, t);
    });
    if (schema.pattern) add(span, " ", el("code", schema.pattern));
    if (schema.minimum !== undefined && schema.maximum !== undefined) {
      add(span, " " + schema.minimum + "–" + schema.maximum);
    }
    return span;
  }

  /* The properties of an object shape as a table (or null when it names none). */
  function propertyTable(schema) {
    if (!schema || !schema.properties) return null;
    var required = schema.required || [];
    var table = el("table");
    add(table, add(el("tr"), el("th", "field"), el("th", "type")));
    Object.keys(schema.properties).forEach(function (key) {
      var name = add(el("td"), el("code", key), required.indexOf(key) >= 0 ? el("span", " *", "req") : null);
      add(table, add(el("tr"), name, add(el("td"), typeNode(schema.properties[key]))));
    });
    return table;
  }

  function parameterTable(params) {
    var table = el("table", null, "params");
    add(table, add(el("tr"), el("th", "parameter"), el("th", "in"), el("th", "type"), el("th", "meaning")));
    params.forEach(function (p) {
      var examples = p.examples ? Object.keys(p.examples).map(function (k) { return p.examples[k].value; }) : [];
      var meaning = add(el("td"), p.description || "");
      if (examples.length) add(meaning, el("span", " e.g. " + examples.map(JSON.stringify).join(", "), "muted"));
      add(table, add(el("tr"), add(el("td"), el("code", p.name)), el("td", p["in"]),
        add(el("td"), typeNode(p.schema)), meaning));
    });
    return table;
  }

  function responseTable(responses) {
    var table = el("table", null, "responses");
    add(table, add(el("tr"), el("th", "status"), el("th", "meaning"), el("th", "body")));
    Object.keys(responses).forEach(function (status) {
      var r = deref(responses[status]);
      var body = el("td");
      var content = r.content || {};
      Object.keys(content).forEach(function (media, i) {
        add(body, i ? el("br") : null, el("span", media + " ", "muted"), typeNode(content[media].schema));
      });
      var headers = Object.keys(r.headers || {}).map(function (name) {
        var h = deref(r.headers[name]);
        return name + (h.required ? " (always)" : "");
      });
      if (headers.length) add(body, el("div", "headers: " + headers.join(", "), "muted"));
      add(table, add(el("tr"), el("td", status, "status s" + status.charAt(0)), el("td", r.description || ""), body));
    });
    return table;
  }

  function operation(path, method, op, pathParams, perGateway, about) {
    var box = el("details", null, "op");
    box.setAttribute("data-path", path);
    box.setAttribute("data-method", method);
    var summary = add(el("summary"), el("span", method.toUpperCase(), "method " + method),
      el("span", path, "path"), el("span", op.summary || "", "muted"));
    if (perGateway) add(summary, el("span", "also per gateway", "badge"));
    if (op.security && op.security.length) {
      add(summary, el("span", "auth: " + op.security.map(function (s) { return Object.keys(s).join("+"); }).join(" or "), "lock"));
    }
    add(box, summary);
    var body = el("div");
    if (op.description) add(body, el("p", op.description));
    if (about) add(body, el("p", about, "muted"));
    var params = (pathParams || []).concat(op.parameters || []);
    if (params.length) add(body, parameterTable(params));
    if (op.requestBody) {
      var content = op.requestBody.content || {};
      var medias = Object.keys(content);
      add(body, el("h4", "Body: " + medias.join(" or ")));
      if (medias.length) add(body, propertyTable(content[medias[0]].schema) || typeNode(content[medias[0]].schema));
    }
    add(body, responseTable(op.responses || {}));
    if (method === "get" && path.indexOf("{") < 0) {
      var link = el("a", "open " + path);
      link.href = PW.base + path.replace(/^\//, "");
      add(body, add(el("p"), link));
    }
    return add(box, body);
  }

  function render() {
    var paths = spec.paths || {};
    var byTag = {};
    var order = (spec.tags || []).map(function (t) { return t.name; });
    Object.keys(paths).forEach(function (path) {
      var item = paths[path];
      METHODS.forEach(function (method) {
        var op = item[method];
        if (!op) return;
        var tag = (op.tags && op.tags[0]) || "other";
        if (order.indexOf(tag) < 0) order.push(tag);
        (byTag[tag] = byTag[tag] || []).push({ path: path, method: method, op: op, params: item.parameters,
          about: item.description });
      });
    });
    var list = $("operations");
    list.textContent = "";
    order.forEach(function (tag) {
      var ops = byTag[tag];
      if (!ops) return;
      var section = el("section", null, "tag");
      section.id = "tag-" + tag;
      var about = (spec.tags || []).filter(function (t) { return t.name === tag; })[0];
      add(section, add(el("h3", tag), about ? el("span", " — " + about.description, "muted") : null));
      ops.forEach(function (o) {
        var mounted = o.path.indexOf(MOUNT + "/") === 0;
        var box = operation(o.path, o.method, o.op, o.params, !mounted && paths[MOUNT + o.path] !== undefined,
          o.about);
        if (mounted) box.setAttribute("data-mounted", "1");
        add(section, box);
      });
      add(list, section);
    });
    renderSchemes();
    renderSchemas();
    applyFilter();
  }

  function renderSchemes() {
    var schemes = (spec.components && spec.components.securitySchemes) || {};
    var dl = $("schemes");
    dl.textContent = "";
    Object.keys(schemes).forEach(function (name) {
      var s = schemes[name];
      add(dl, el("dt", name + " (" + s.type + (s.scheme ? " " + s.scheme : "") + ")"), el("dd", s.description || ""));
    });
  }

  function renderSchemas() {
    var schemas = (spec.components && spec.components.schemas) || {};
    var list = $("schema-list");
    list.textContent = "";
    Object.keys(schemas).forEach(function (name) {
      var schema = schemas[name];
      var box = el("details", null, "schema");
      box.id = "schema-" + name;
      add(box, add(el("summary"), el("code", name), " ", el("span", schema.description || "", "muted")));
      var parts = schema.allOf || [schema];
      parts.forEach(function (part) { add(box, propertyTable(part) || add(el("p"), typeNode(part))); });
      add(list, box);
    });
    if (location.hash.indexOf("#schema-") === 0) {
      var target = document.getElementById(location.hash.slice(1));
      if (target) target.open = true;
    }
  }

  function applyFilter() {
    var words = $("filter").value.trim().toLowerCase();
    var showMounted = $("mounted").checked;
    var showImplicit = $("implicit").checked;
    var shown = 0;
    var boxes = document.querySelectorAll("details.op");
    Array.prototype.forEach.call(boxes, function (box) {
      var path = box.getAttribute("data-path").toLowerCase();
      var method = box.getAttribute("data-method");
      var visible = (showMounted || !box.hasAttribute("data-mounted")) &&
        (showImplicit || (method !== "head" && method !== "options")) &&
        (!words || path.indexOf(words) >= 0);
      box.hidden = !visible;
      if (visible) shown++;
    });
    Array.prototype.forEach.call(document.querySelectorAll("section.tag"), function (section) {
      section.hidden = !section.querySelector("details.op:not([hidden])");
    });
    $("count").textContent = shown + " of " + boxes.length + " operations";
  }

  function show(problem) {
    var p = $("problem");
    p.textContent = problem;
    p.hidden = !problem;
  }

  document.addEventListener("click", function (event) {
    var a = event.target.closest && event.target.closest("a[href^='#schema-']");
    if (!a) return;
    var target = document.getElementById(a.getAttribute("href").slice(1));
    if (target) target.open = true;
  });
  $("filter").addEventListener("input", applyFilter);
  $("mounted").addEventListener("change", applyFilter);
  $("implicit").addEventListener("change", applyFilter);
  $("raw").href = PW.base + "openapi.json";

  PW.getJSON("openapi.json", 15000).then(function (res) {
    if (!res.ok || !res.body.paths) {
      show("Cannot read openapi.json: " + (res.error || "no paths"));
      return;
    }
    spec = res.body;
    $("title").textContent = spec.info.title + " API";
    $("version").textContent = "version " + spec.info.version + " · OpenAPI " + spec.openapi;
    $("about").textContent = spec.info.description || "";
    render();
    document.body.setAttribute("data-ready", "1");
  });
})();
