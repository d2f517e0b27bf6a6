"""OpenC2: a Consumer of the OASIS OpenC2 Language 1.0 over HTTPS (transfer spec 1.1 and 1.0).

`POST /.well-known/openc2` takes the v1.1 envelope (`headers`/`body.openc2.request`),
`POST /openc2` a bare v1.0 Command; each answers in the form it was asked in, with the
OpenC2 status as the HTTP status. `POST /openc2/command/` and `POST /oc2/` speak the 2018
connector's pre-1.0 grammar.

This module is the transfer: who is asking (the bearer token: the OpenC2 token may query,
the control secret may also set; wrong tokens share /control/*'s throttle per client), the
budgets, and the route group. The rest is at its section seams: `grammar` (what a message
is), `profile` (what x-esm does), `answer` (the Response, framed as asked), `schema` (what
/openapi.json says).

Reads and writes have budgets of their own: however many queries arrive with the read token,
a `set` with the control secret is served at once (while its own budget lasts).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from proxy.api import control
from proxy.api.app import App, json_response
from proxy.api.openc2.answer import Outcome, outcome_of, render, respond_as_asked
from proxy.api.openc2.grammar import ID, Command, Exchange, Flavor, decode, parse, request_id, unwrap
from proxy.api.openc2.profile import (
    NSID,
    READS_PER_MINUTE,
    WRITES_PER_MINUTE,
    Context,
    Role,
    execute,
    seed_command,
)
from proxy.api.openc2.schema import doc_for
from proxy.api.routing import Call, Route
from proxy.api.tokens import bearer_token, same_secret
from proxy.errors import HTTPError, ProxyError
from proxy.httpd.types import Response
from proxy.ratelog import RateLog
from proxy.reports import Reports

log = logging.getLogger("proxy.openc2")

BAD_TOKEN = "Invalid or missing bearer token"
SEED_HEADERS = ("apikey", "oc2-api-key")
# The v1.1 path, the v1.0 path, and the 2018 connector's two (with and without the slash,
# as its router took them).
PATHS = ("/.well-known/openc2", "/openc2", "/openc2/command/", "/openc2/command", "/oc2/", "/oc2")


class CommandLimit:
    """At most `per_minute` commands per clock minute (fixed windows), for everyone together."""

    def __init__(self, per_minute: int = READS_PER_MINUTE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._window = -1
        self._count = 0

    def take(self) -> float:
        """0 when the command may run, else the seconds until the next window."""
        with self._lock:
            now = self._clock()
            window = int(now // 60)
            if window != self._window:
                self._window, self._count = window, 0
            if self._count >= self.per_minute:
                return 60.0 - now % 60
            self._count += 1
            return 0.0

    def used(self) -> int:
        with self._lock:
            return self._count if self._window == int(self._clock() // 60) else 0


class Budgets:
    """The group's two budgets, built in main: queries (and anything that is not a Command)
    spend `reads`, a `set` spends `writes`, so a flood of queries never delays a write."""

    def __init__(self, reads: CommandLimit | None = None, writes: CommandLimit | None = None) -> None:
        self.reads = CommandLimit(READS_PER_MINUTE) if reads is None else reads
        self.writes = CommandLimit(WRITES_PER_MINUTE) if writes is None else writes

    def spend(self, budget: CommandLimit, what: str) -> None:
        """Take a place, or 503 with Retry-After when this minute's are gone."""
        wait = budget.take()
        if wait > 0:
            raise HTTPError(503, f"more than {budget.per_minute} {what} a minute",
                            [("Retry-After", str(max(1, math.ceil(wait))))])

    def stats(self) -> dict[str, Any]:
        """This minute's use of each budget, for /stats."""
        return {name: {"per_minute": b.per_minute, "used": b.used()}
                for name, b in (("reads", self.reads), ("writes", self.writes))}


# ---- who is asking ---------------------------------------------------------------------

def authenticate(app: App, call: Call, flavor: Flavor) -> Role:
    """The bearer token (or the seed's key header): the control secret may set, the OpenC2
    token may query; anything else is 401 (429 -> 503 for a client that keeps guessing)."""
    headers = call.request.headers
    token = bearer_token(headers)
    if not token and flavor is Flavor.SEED:
        token = next((headers.get(h, "") for h in SEED_HEADERS if headers.get(h)), "")
    secret = app.config.control_secret.reveal()
    if secret and same_secret(token, secret):
        return Role.CONTROL
    if same_secret(token, app.config.openc2_token.reveal()):
        return Role.QUERY
    raise control.refused_token(app, call, BAD_TOKEN)


# ---- serving one command -----------------------------------------------------------------

def _serve(app: App, call: Call, budgets: Budgets, ex: Exchange) -> Outcome:
    given = call.request.headers.get("X-Request-ID")
    if given is not None:
        ex.header_id = request_id(given, "X-Request-ID")
    if call.request.method != "POST":
        raise HTTPError(405, "Method Not Allowed")
    role = authenticate(app, call, ex.flavor)
    try:
        message = decode(call.request)
        command = None if ex.flavor is Flavor.SEED else parse(unwrap(message, ex), ex, NSID)
    except ProxyError:
        budgets.spend(budgets.reads, "commands")  # not a Command: it spends a query's place
        raise
    if command is None:  # the 2018 connector's grammar: queries only
        budgets.spend(budgets.reads, "commands")
        return seed_command(app, message, ex)
    _spend_for(budgets, command, role)
    outcome = execute(Context(app, call, role, budgets.reads.per_minute, command))
    return respond_as_asked(outcome, command.args)


def _spend_for(budgets: Budgets, command: Command, role: Role) -> None:
    # Only the control secret's sets spend the write budget: a `set` with the read token is
    # refused (403) and spends a query's place, so the read token cannot use up the writes.
    if command.action == "set" and role is Role.CONTROL:
        budgets.spend(budgets.writes, "sets")
    else:
        budgets.spend(budgets.reads, "commands")


def _flavor(call: Call) -> Flavor:
    if call.path == "/.well-known/openc2":
        return Flavor.ENVELOPE
    return Flavor.BARE if call.path == "/openc2" else Flavor.SEED


def _disabled() -> Response:
    return json_response(404, {"error": "Not Found"})


def render_error(app: App, exc: ProxyError, call: Call) -> Response:
    """The group's error renderer: errors raised before the handler ran (a wrong method)."""
    if not app.config.openc2_token:
        return _disabled()
    ex = Exchange(_flavor(call))
    given = call.request.headers.get("X-Request-ID")
    if given is not None and ID.fullmatch(given):
        ex.header_id = given
    return render(ex, outcome_of(exc))


def routes(budgets: Budgets, reports: Reports | None = None) -> tuple[Route, ...]:
    """The OpenC2 route group: POST only, its own error body (mounted with `render_error`);
    its budgets report as "openc2"."""
    failures = RateLog(log)  # a client's command may set a bug off: once a minute, with a count
    if reports is not None:
        reports.register("openc2", budgets.stats)

    def handler(app: App, call: Call) -> Response:
        if not app.config.openc2_token:
            return _disabled()
        ex = Exchange(_flavor(call))
        try:
            outcome = _serve(app, call, budgets, ex)
        except ProxyError as exc:
            outcome = outcome_of(exc)
        except Exception:  # never a hang and never a non-OpenC2 500
            failures.exception("openc2: command failed")
            outcome = Outcome(500, text="internal error")
        return render(ex, outcome)

    return tuple(Route(path, handler, methods=("POST", "OPTIONS"), doc=doc_for(path))
                 for path in PATHS)
