"""A run's step attempts on a shared time axis (as Temporal's and DBOS's
run views draw them): one row per step of the path, each attempt a bar to
scale, and what the run waited for between them drawn as its own segment.

Pure geometry from plain values; `templates/console/runs/partials/_time_axis.html`
draws it. Segments:
- `attempt`: an attempt of the step, from its start to its finish (its status
  says how it ended);
- `backoff`: after a failed attempt, the retry delay it was given;
- `approval`: a request waiting for a person, from its creation to the decision;
- `limit`, `breaker`, `paused`: the wait in progress, by what the run waits for
  (its `wait_reason`);
- `wait`: any other time between two attempts (the queue, or a limit, breaker
  or kill switch the run waited on earlier: the engine records a wait's reason
  while it lasts, not after).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from lib.durations import human_ms

WIDTH = 760  # the whole drawing
LEFT = 170  # room for the row labels
RIGHT = 16
ROW_H = 22
TOP = 26  # room for the tick labels
MIN_SHOWN_W = 2.0  # a bar shorter than this is still drawn this wide
NICE_MS = [
    1, 2, 5, 10, 20, 50, 100, 200, 500,
    1_000, 2_000, 5_000, 10_000, 15_000, 30_000,
    60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000,
    3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000,
    86_400_000, 172_800_000, 604_800_000,
]  # fmt: skip
MAX_TICKS = 8


@dataclass(frozen=True)
class Attempt:
    seq: int
    key: str
    attempt: int
    status: str
    started_at: datetime
    finished_at: datetime
    retry_delay_s: float | None = None
    cost: str = ""


@dataclass(frozen=True)
class Approval:
    seq: int
    created_at: datetime
    decided_at: datetime | None


@dataclass(frozen=True)
class Current:
    """Where an active run stands: its step, status and wait reason."""

    seq: int
    key: str
    status: str
    wait_reason: str


@dataclass(frozen=True)
class Segment:
    kind: str
    start_ms: float  # from the run's creation
    end_ms: float
    x: float
    width: float
    title: str
    status: str = ""
    open: bool = False  # still going on

    @property
    def shown_width(self) -> float:
        return max(self.width, MIN_SHOWN_W)


@dataclass(frozen=True)
class Row:
    seq: int
    key: str
    y: float
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class TimeAxis:
    rows: tuple[Row, ...]
    ticks: tuple[Tick, ...]
    span_ms: float
    scale: float  # pixels per millisecond
    width: int
    height: float
    left: int
    right: int
    span_label: str


def time_axis(
    *,
    created_at: datetime,
    until: datetime,
    attempts: Sequence[Attempt],
    approvals: Iterable[Approval] = (),
    current: Current | None = None,
) -> TimeAxis:
    """The axis from the run's creation to `until` (its finish, or now for
    an active run), with a row per seq."""

    def ms(moment: datetime) -> float:
        return max((moment - created_at).total_seconds() * 1000, 0.0)

    by_seq: dict[int, list[Attempt]] = {}
    for attempt in sorted(attempts, key=lambda a: (a.seq, a.attempt)):
        by_seq.setdefault(attempt.seq, []).append(attempt)
    waits = {a.seq: a for a in approvals}
    seqs = sorted(set(by_seq) | set(waits) | ({current.seq} if current else set()))
    end_ms = max(
        [ms(until)]
        + [ms(a.finished_at) for a in attempts]
        + [ms(w.decided_at) for w in waits.values() if w.decided_at]
        + [ms(w.created_at) for w in waits.values()]
    )
    span = end_ms if end_ms > 0 else 1.0
    scale = (WIDTH - LEFT - RIGHT) / span

    def seg(kind: str, start: float, end: float, title: str, **extra) -> Segment:
        return Segment(
            kind, start, end, LEFT + start * scale, (end - start) * scale, title, **extra
        )

    rows = []
    previous_end = 0.0
    for index, seq in enumerate(seqs):
        tries = by_seq.get(seq, [])
        key = tries[0].key if tries else (current.key if current else "")
        segments: list[Segment] = []
        approval = waits.get(seq)
        if approval is not None:
            start = ms(approval.created_at)
            end = ms(approval.decided_at) if approval.decided_at else end_ms
            decided = "decided" if approval.decided_at else "still waiting"
            segments.append(
                seg(
                    "approval",
                    start,
                    end,
                    f"waited for a person {human_ms(end - start)} ({decided})",
                    open=approval.decided_at is None,
                )
            )
        # The time between the previous step and this one's first activity
        # (an attempt, or a request for a person) was spent waiting.
        starts = [ms(tries[0].started_at)] if tries else []
        starts += [ms(approval.created_at)] if approval is not None else []
        if starts and min(starts) > previous_end:
            segments.append(_wait(seg, previous_end, min(starts)))
        for number, attempt in enumerate(tries):
            start, end = ms(attempt.started_at), ms(attempt.finished_at)
            title = f"attempt {attempt.attempt}: {attempt.status}, {human_ms(end - start)}"
            if attempt.cost:
                title += f", ${attempt.cost}"
            segments.append(seg("attempt", start, end, title, status=attempt.status))
            following = tries[number + 1] if number + 1 < len(tries) else None
            if following is not None and attempt.status == "failed":
                next_start = ms(following.started_at)
                delay = (attempt.retry_delay_s or 0) * 1000
                backoff_end = min(end + delay, next_start)
                if backoff_end > end:
                    segments.append(
                        seg(
                            "backoff",
                            end,
                            backoff_end,
                            f"retry backoff {human_ms(backoff_end - end)}",
                        )
                    )
                if next_start > backoff_end:
                    segments.append(_wait(seg, backoff_end, next_start))
        last = max([s.end_ms for s in segments], default=previous_end)
        is_current = current is not None and seq == current.seq and index == len(seqs) - 1
        if is_current and current is not None:
            segments.extend(_now(seg, current, tries, last, end_ms, approval is not None))
        rows.append(Row(seq, key, TOP + index * ROW_H, tuple(segments)))
        previous_end = max(previous_end, last)
    return TimeAxis(
        rows=tuple(rows),
        ticks=_ticks(span, scale),
        span_ms=span,
        scale=scale,
        width=WIDTH,
        height=TOP + len(rows) * ROW_H + 6,
        left=LEFT,
        right=WIDTH - RIGHT,
        span_label=human_ms(span),
    )


def _wait(seg, start: float, end: float) -> Segment:
    return seg(
        "wait",
        start,
        end,
        f"waited {human_ms(end - start)} (queue, a limit, a breaker or a switch)",
    )


def _now(seg, current: Current, tries: list[Attempt], last: float, end: float, approval: bool):
    """The open segment of what the run is doing now, from its last moment."""
    reason = current.wait_reason
    if current.status == "running":
        return [
            seg(
                "attempt",
                last,
                end,
                f"running for {human_ms(end - last)}",
                status="running",
                open=True,
            )
        ]
    if reason == "approval" and approval:
        return []  # the open approval segment says it
    if reason.startswith("limit:") or reason.startswith("breaker:"):
        kind = reason.split(":", 1)[0]
    elif reason == "paused":
        kind = "paused"
    elif reason == "retry" and tries:
        kind = "backoff"
    else:
        kind = "wait"
    what = reason or current.status
    return [seg(kind, last, end, f"waiting for {what} for {human_ms(end - last)}", open=True)]


def _ticks(span: float, scale: float) -> tuple[Tick, ...]:
    step = next((n for n in NICE_MS if span / n <= MAX_TICKS), NICE_MS[-1])
    ticks = []
    value = 0.0
    while value <= span + 1e-9:
        ticks.append(Tick(LEFT + value * scale, human_ms(value) if value else "0"))
        value += step
    return tuple(ticks)
