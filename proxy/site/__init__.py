"""What every output reads, never renders: one gateway as a `Site` (reads with the
degradation rule), its `Frame` per window and the aggregate arithmetic (`frames`), the one
table of measurements (`points`), the one table of control actions (`actions`), and the hub
(the per-window refresher every follower subscribes to).

May import `proxy.gateway` and the shared modules (`config`, `errors`, `payloads`,
`reports`, `stats`); never `proxy.api`, `proxy.mqtt` or `proxy.httpd`, and it picks no HTTP
status (errors are typed).
"""
