"""OpenC2: the routes of /.well-known/openc2 and the 2018 connector's paths, at their seams.

`grammar` (what a message is: pure), `profile` (what the x-esm profile does with a Command:
reads through `proxy.site`, writes through `proxy.site.actions`), `answer` (the Response,
framed as it was asked), `schema` (its OpenAPI shapes), `consumer` (tokens, budgets, the route
group). May import `proxy.api` (app, routing, control, tokens), `proxy.site`, `proxy.errors`,
`proxy.payloads`; nothing imports it but `proxy.api.mounts` (and its tests).
"""

from proxy.api.openc2.consumer import PATHS, Budgets, CommandLimit, render_error, routes
from proxy.api.openc2.schema import doc_for

__all__ = ["PATHS", "Budgets", "CommandLimit", "doc_for", "render_error", "routes"]
