"""Template filters of the console pages."""

from __future__ import annotations

from django import template

from lib.durations import human_ms as _human_ms

register = template.Library()


@register.filter
def human_ms(ms: float | None) -> str:
    """`{{ step.duration_ms|human_ms }}`: 840 ms, 3.2 s, 4.5 min, 13.5 h; — when unknown."""
    return _human_ms(ms) or "—"


@register.filter
def human_s(seconds: float | None) -> str:
    """The same for a duration in seconds."""
    return _human_ms(None if seconds is None else seconds * 1000) or "—"
