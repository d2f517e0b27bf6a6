"""The HTTP surface: one module per route group, listed with its prefix in `mounts`.

`routing` (Call, Route, Mount, Router: exact dict lookups), `app` (Request in, Response out;
typed errors rendered once), and the groups: `reference` (the reference proxy's routes),
`status`, `control`, `aggregate`, `live`, `metrics`, `openapi` (with `apidoc`, the docs
rows carry), `openc2/`; the fallback is `web` and `passthrough`. May import `proxy.site` (a
gateway is reached only through a `Site`; from `proxy.gateway` only its source rows and
types), `proxy.httpd.types` and `proxy.httpd.stream`, and the shared modules; never
pypowerwall, never `proxy.mqtt`.
"""
