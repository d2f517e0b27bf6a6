"""The outcome classifier, without a network: one row per rule of `proxy.gateway.outcome`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.gateway.outcome import DEADLINE, TOO_LARGE, Contract, Exchange, Kind, Shape, judge

OBJECT = Contract(Shape.OBJECT)
LIST = Contract(Shape.LIST)
NUMBER = Contract(Shape.NUMBER)
JSON = Contract(Shape.JSON)


def ok(path: str = "/api/x", ctype: str = "application/json", length: int = 10) -> Exchange:
    return Exchange("GET", path, 200, content_type=ctype, length=length)


def status(code: int, path: str = "/api/x", retry_after: float | None = None) -> Exchange:
    return Exchange("GET", path, code, retry_after=retry_after)


NO_ANSWER = Exchange("GET", "/api/x", None, error="ConnectionError")
TIMED_OUT = Exchange("GET", "/api/x", None, error=DEADLINE)
HTML = ok(ctype="text/html; charset=utf-8", length=900)


@pytest.mark.parametrize(("value", "raised", "exchanges", "errors", "contract", "kind"), [
    # data
    ({"a": 1}, None, [ok()], 0, OBJECT, Kind.DATA),
    (42.5, None, [ok()], 0, NUMBER, Kind.DATA),
    ([], None, [ok()], 0, LIST, Kind.DATA),  # no alerts is an answer
    ([], None, [ok()], 0, JSON, Kind.DATA),  # no grid faults
    ({}, None, [ok()], 0, OBJECT, Kind.DATA),  # an object with no entries
    ("[]", None, [ok(ctype="text/plain")], 0, JSON, Kind.DATA),  # text the library did not decode
    ({}, None, [], 0, JSON, Kind.DATA),  # the library's own payload (TEDAPI mode's solar_powerwall)
    ('{"a": 1}', None, [ok()], 0, OBJECT, Kind.DATA),  # text the library did not decode
    ({"a": 1}, None, [], 0, OBJECT, Kind.DATA),  # from the library's own cache
    # busy and refused logins
    (None, None, [status(429, retry_after=7)], 1, OBJECT, Kind.BUSY),
    (None, None, [status(503)], 1, OBJECT, Kind.BUSY),
    (None, None, [status(401, "/api/login/Basic")], 1, OBJECT, Kind.AUTH),
    (None, None, [status(403, "/tedapi/din")], 1, OBJECT, Kind.AUTH),
    # no answer at all
    (None, None, [NO_ANSWER], 1, OBJECT, Kind.NO_ANSWER),
    (None, None, [TIMED_OUT], 1, OBJECT, Kind.NO_ANSWER),
    (None, None, [status(500)], 1, OBJECT, Kind.NO_ANSWER),
    (None, ConnectionError("refused"), [], 0, OBJECT, Kind.NO_ANSWER),
    # answered, with nothing in it: absent, served as null
    (None, None, [ok(length=0)], 0, OBJECT, Kind.ABSENT),
    ("null", None, [ok()], 0, JSON, Kind.ABSENT),
    (None, None, [status(404)], 1, OBJECT, Kind.ABSENT),
    (None, None, [ok("/api/status"), status(404, "/api/devices/vitals")], 1, OBJECT, Kind.ABSENT),
    (None, None, [status(403, "/api/powerwalls")], 1, JSON, Kind.ABSENT),
    # answered, but not the resource
    ("<html>login</html>", None, [HTML], 0, OBJECT, Kind.NOT_DATA),
    (None, None, [HTML], 1, OBJECT, Kind.NOT_DATA),
    ({}, None, [HTML], 0, OBJECT, Kind.NOT_DATA),  # the library made nothing of a web page
    ("plain words", None, [ok(ctype="text/plain")], 0, OBJECT, Kind.NOT_DATA),
    ("a string", None, [ok()], 0, OBJECT, Kind.NOT_DATA),
    ([1, 2], None, [ok()], 0, OBJECT, Kind.NOT_DATA),
    ({"a": 1}, None, [ok()], 0, NUMBER, Kind.NOT_DATA),
    (None, None, [ok()], 1, OBJECT, Kind.NOT_DATA),  # the library logged an error, gave nothing
    ({}, None, [ok()], 1, OBJECT, Kind.NOT_DATA),  # ... or an empty object it could not fill
    (None, json.JSONDecodeError("x", "doc", 0), [ok()], 0, OBJECT, Kind.NOT_DATA),
    (None, AttributeError("'str' has no get"), [], 0, NUMBER, Kind.NOT_DATA),  # cached garbage
    (None, None, [Exchange("GET", "/api/x", 200, error=TOO_LARGE)], 1, OBJECT, Kind.NOT_DATA),
    (None, None, [], 1, OBJECT, Kind.NOT_DATA),  # the library gave up before asking (its lock)
    # the library cannot ask this in this mode
    ("TIMEOUT!", None, [], 0, OBJECT, Kind.NOT_SUPPORTED),
    ({"ERROR": "not available in cloud mode"}, None, [], 0, OBJECT, Kind.NOT_SUPPORTED),
])
def test_rules(value: Any, raised: BaseException | None, exchanges: list[Exchange], errors: int,
               contract: Contract, kind: Kind) -> None:
    assert judge(value, raised, exchanges, errors, contract).kind is kind


def test_text_is_decoded_and_busy_keeps_retry_after() -> None:
    assert judge('{"a": 1}', None, [ok()], 0, OBJECT).value == {"a": 1}
    assert judge(None, None, [status(429, retry_after=7)], 1, OBJECT).retry_after == 7


def test_a_pieced_answer_is_not_data() -> None:
    verdict = judge({"site": {}}, None, [ok()], 0, OBJECT, pieced=True)
    assert verdict.kind is Kind.NOT_DATA


def test_only_failures_of_the_gateway_count_as_no_answer() -> None:
    answered = [k for k in Kind if k.answered]
    assert answered == [Kind.DATA, Kind.ABSENT, Kind.NOT_DATA]
