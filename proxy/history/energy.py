"""Daily energy from lifetime counters: pure functions.

A gateway's meters count Wh imported and exported since they were installed. The energy of a
local day is what a counter gained within it. Between two readings the gain is spread evenly
over the time between them, so a gap (an outage, a proxy restart) that spans midnight is
shared out between the days it covers, and nothing is lost or counted twice. A counter that
goes down (a reset, a replaced meter) starts a new segment: the drop is never counted, and
the new segment counts from its first reading.

Days are cut at local midnight in the gateway's time zone, DST included: a day is 23, 24 or
25 hours long, as the calendar says.
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass
from zoneinfo import ZoneInfo

DIRECTIONS = ("imported", "exported")


@dataclass(frozen=True, slots=True)
class Reading:
    """A counter reading: Wh at a Unix time."""

    value: float
    t: float


def day_of(t: float, zone: ZoneInfo) -> datetime.date:
    """The local calendar day a Unix time falls in."""
    return datetime.datetime.fromtimestamp(t, zone).date()


def day_start(day: datetime.date, zone: ZoneInfo) -> float:
    """The Unix time of local midnight starting `day` (the first instant of the day)."""
    return datetime.datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()


def split(t0: float, t1: float, amount: float, zone: ZoneInfo) -> list[tuple[datetime.date, float]]:
    """`amount` gained between t0 and t1, shared out evenly over the local days it spans."""
    if t1 <= t0:
        return [(day_of(t1, zone), amount)]
    day = day_of(t0, zone)
    if t1 < _next_midnight(day, zone):  # the usual case: within one day
        return [(day, amount)]
    parts: list[tuple[datetime.date, float]] = []
    start = t0
    while True:
        following = day + datetime.timedelta(days=1)
        end = min(t1, _next_midnight(day, zone))
        if end > start:
            parts.append((day, amount * (end - start) / (t1 - t0)))
        if end >= t1:
            return parts
        start, day = end, following


@functools.lru_cache(maxsize=64)
def _next_midnight(day: datetime.date, zone: ZoneInfo) -> float:
    return day_start(day + datetime.timedelta(days=1), zone)


def gain(last: Reading | None, now: Reading, zone: ZoneInfo) -> list[tuple[datetime.date, float]]:
    """Wh per local day between two readings of one counter; [] for the first reading and
    when the counter went down (a new segment starts at `now`)."""
    if last is None or now.value < last.value or now.t <= last.t:
        return []
    # A counter that did not move still says the day had a reading: 0, not unknown.
    return split(last.t, now.t, now.value - last.value, zone)
