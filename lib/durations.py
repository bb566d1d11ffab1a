"""Durations in the units a person reads: 840 ms, 3.2 s, 4.5 min, 13.5 h, 2.1 d."""

from __future__ import annotations


def human_ms(ms: float | None) -> str:
    """A duration given in milliseconds, in the largest unit that keeps it
    readable; "" for None (no duration yet)."""
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    if ms < 7_200_000:
        return f"{ms / 60_000:.1f} min"
    if ms < 172_800_000:
        return f"{ms / 3_600_000:.1f} h"
    return f"{ms / 86_400_000:.1f} d"
