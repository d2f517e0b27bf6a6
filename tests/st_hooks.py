"""Schemathesis hooks for tests/test_openapi.py (loaded by name from tests/schemathesis.toml).

Every generated request comes from a client of its own, as if many clients sat behind a
trusted reverse proxy (the test proxy trusts 127.0.0.1). Otherwise the wrong tokens that
schemathesis sends on purpose would trip the per-client throttle after three, and every
later unauthenticated probe would get 429 instead of the 401 it is checking for. The
throttle itself is tested in tests/test_control.py.

JSON Schema counts 30.0 as an integer; the proxy wants integers written as integers (30),
as the document says. A body meant to be valid has its whole-number floats written so.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import schemathesis

_clients = itertools.count(random.getrandbits(22) << 2)


def whole(value: Any) -> Any:
    """The value with every whole-number float (30.0) written as an integer (30)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: whole(item) for key, item in value.items()}
    if isinstance(value, list):
        return [whole(item) for item in value]
    return value


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    n = next(_clients)
    client = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
    case.headers = {**(case.headers or {}), "X-Forwarded-For": client}
    meta = case.meta
    if meta is not None and meta.generation.mode.is_positive and isinstance(case.body, (dict, list)):
        case.body = whole(case.body)
