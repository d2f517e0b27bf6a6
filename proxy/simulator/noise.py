"""Deterministic, seedable smooth noise.

The home's numbers must be reproducible for a given seed and identical for every
reader at the same moment, so noise is a pure function of (seed, channel, time)
instead of a stateful random generator that would depend on how often it is asked.
"""

from __future__ import annotations

import math

_MASK64 = (1 << 64) - 1


def _mix64(value: int) -> int:
    """Scramble a 64-bit integer (splitmix64 finaliser)."""
    value &= _MASK64
    value ^= value >> 30
    value = (value * 0xBF58476D1CE4E5B9) & _MASK64
    value ^= value >> 27
    value = (value * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def uniform(seed: int, channel: int, index: int) -> float:
    """A value in [0, 1) that depends only on its three arguments."""
    key = seed * 0x9E3779B97F4A7C15 + channel * 0xD1B54A32D192ED03 + index
    return _mix64(_mix64(key)) / float(1 << 64)


def smooth(seed: int, channel: int, t: float, period: float) -> float:
    """Value noise in [-1, 1]: random knots every `period` seconds, eased between."""
    position = t / period
    knot = math.floor(position)
    frac = position - knot
    left = uniform(seed, channel, knot) * 2.0 - 1.0
    right = uniform(seed, channel, knot + 1) * 2.0 - 1.0
    # Cosine easing keeps the curve free of corners, like a real meter trace.
    weight = (1.0 - math.cos(math.pi * frac)) / 2.0
    return left + (right - left) * weight
