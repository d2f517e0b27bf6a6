"""A caching HTTP proxy for Tesla Powerwall gateways.

Layers, imports pointing down: `httpd` (HTTP, no Powerwall) and `gateway` (the only code that
touches pypowerwall) at the bottom; `site` (what every output reads) on `gateway`; `api` (the
HTTP surface) and `mqtt` on `site`; `main` composes them all. Shared by every layer: `config`
(settings, parsed once), `errors` (typed errors), `payloads` (pure builders, the one JSON
number test), `reports` (the registry every part reports into), `ratelog` (client-caused log
lines, rate-limited), `stats`. `simulator` is a gateway of our own; nothing above imports it
but `main` (for --simulate).
"""

__version__ = "0.1.0"
