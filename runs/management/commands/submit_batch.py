"""Start one run per row of a CSV or JSON Lines file, and follow them.

    manage.py submit_batch lead-qualification leads.csv
    manage.py submit_batch support-refund tickets.jsonl --no-wait

Each row is a run's input. Its idempotency key is the row's `id` column
when it has one (the column is not part of the input), else a hash of the
normalised row; so submitting the same file again (after Ctrl-C, or by
mistake) starts nothing twice: those rows are reported as already
submitted. A row the workflow's entry schema refuses is reported with its
number and field and skipped; the others go ahead.

CSV values are strings: where the workflow's input schema says a field is
an integer, a number or a boolean, the value is converted; empty cells are
left out.

With `--wait` (the default) a progress line follows the runs until none is
queued or running (runs waiting for a person count as settled): redrawn in
place on a terminal, a plain line every few seconds otherwise. The worker
(`manage.py worker`) advances them; `--inline` advances them in this
process instead. Ctrl-C loses nothing: every submitted run is already
queued. Exit status: 0 when every row was submitted and no run failed, 1
otherwise, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count, Sum

from runs import engine
from runs.models import TERMINAL_STATUSES, Run, RunStatus, Workflow

# Waits only a person ends (a review, a call to reconcile, a kill switch).
HUMAN_WAITS = ("approval", "needs_reconciliation", "paused")
STALL_HINT_S = 30.0


@dataclass
class Row:
    number: int  # 1-based data row
    line: int  # line of the file it starts on
    input: dict[str, Any] | None
    key: str = ""
    problem: str = ""


@dataclass
class Tally:
    submitted: int = 0
    queued: int = 0
    running: int = 0
    review: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    cost: Decimal = Decimal(0)
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def settled(self) -> bool:
        return self.queued == 0 and self.running == 0

    def line(self) -> str:
        parts = [
            f"submitted {self.submitted}",
            f"queued {self.queued}",
            f"running {self.running}",
            f"waiting for review {self.review}",
            f"done {self.done}",
            f"failed {self.failed}",
        ]
        if self.cancelled:
            parts.append(f"cancelled {self.cancelled}")
        return " | ".join(parts) + f" | spent ${self.cost:.4f}"


class Command(BaseCommand):
    help = "Start one run per row of a CSV or JSONL file; follow them with a progress line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("workflow", help="Slug of the workflow, e.g. lead-qualification.")
        parser.add_argument(
            "file", help="A .csv file with a header row, or .jsonl (one object a line)."
        )
        parser.add_argument(
            "--wait",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="Follow the runs until none is queued or running (default), or exit at once.",
        )
        parser.add_argument(
            "--inline", action="store_true", help="Advance the runs in this process (no worker)."
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=5.0,
            help="Seconds between progress lines off a terminal.",
        )

    def handle(self, *args, **options) -> None:
        workflow = (
            Workflow.objects.select_related("role", "policy")
            .filter(slug=options["workflow"])
            .first()
        )
        if workflow is None:
            raise CommandError(f"no workflow {options['workflow']!r}")
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"no file {path}")
        schema = (
            workflow.serving_version.definition.get("input_schema")
            if workflow.serving_version
            else None
        ) or {}
        self.tty = self.stdout.isatty()
        self.inline = options["inline"]
        # One queue line per run would break the progress line.
        logging.getLogger("django-q").setLevel(logging.WARNING)
        run_ids: list[int] = []
        self.run_ids = run_ids
        counts = {"read": 0, "new": 0, "existing": 0, "invalid": 0}
        try:
            for row in read_rows(path, schema):
                counts["read"] += 1
                run_id = self._submit(workflow, row, counts)
                if run_id is not None:
                    run_ids.append(run_id)
                if self.tty and counts["read"] % 25 == 0:
                    self._draw(f"submitting: {counts['read']} rows read")
            tally = self._follow(run_ids, options) if options["wait"] else None
        except KeyboardInterrupt:
            self._finish_line()
            self.stdout.write(
                f"interrupted: {len(run_ids)} run(s) submitted so far keep running; submit the "
                "same file again to add the rest (rows already submitted are not repeated)."
            )
            self._summary(counts, _tally(run_ids))
            raise SystemExit(130) from None
        self._summary(counts, tally)
        if counts["invalid"] or (tally is not None and tally.failed):
            raise SystemExit(1)

    # Submitting -------------------------------------------------------------

    def _submit(self, workflow: Workflow, row: Row, counts: dict[str, int]) -> int | None:
        if row.problem:
            self._invalid(row, row.problem, counts)
            return None
        assert row.input is not None  # only a row with a problem has no input
        while True:
            try:
                started = engine.start_run(
                    workflow=workflow, input=row.input, idempotency_key=row.key
                )
            except engine.InvalidInput as exc:
                detail = "; ".join(f"{name}: {message}" for name, message in exc.fields.items())
                self._invalid(row, detail, counts)
                return None
            except engine.QueueFull as exc:
                # Backpressure: the workflow has as many active runs as it
                # allows; this row goes in when a place frees up.
                self._note(f"queue full at row {row.number}: waiting {exc.retry_after:.0f} s")
                if self.inline:
                    _advance(self.run_ids)  # free a place ourselves
                else:
                    time.sleep(exc.retry_after)
                continue
            except engine.EngineError as exc:
                raise CommandError(str(exc)) from None
            counts["new" if started.created else "existing"] += 1
            return started.run.pk

    def _invalid(self, row: Row, detail: str, counts: dict[str, int]) -> None:
        counts["invalid"] += 1
        self._finish_line()
        self.stderr.write(f"row {row.number} (line {row.line}): {detail}")

    # Following ----------------------------------------------------------------

    def _follow(self, run_ids: list[int], options: dict[str, Any]) -> Tally:
        last_line, last_print, last_change = "", 0.0, time.monotonic()
        hinted = False
        while True:
            tally = _tally(run_ids)
            line = tally.line()
            now = time.monotonic()
            if line != last_line:
                last_change = now
            if self.tty:
                self._draw(line)
            elif tally.settled or (line != last_line and now - last_print >= options["interval"]):
                self.stdout.write(line)
                last_print = now
            last_line = line
            if tally.settled:
                self._finish_line()
                return tally
            if not options["inline"] and not hinted and now - last_change > STALL_HINT_S:
                hinted = True
                self._finish_line()
                self.stdout.write(
                    f"no run has moved for {STALL_HINT_S:.0f} s: is a worker running "
                    "(manage.py worker)? --inline advances the runs here instead."
                )
            if options["inline"]:
                _advance(run_ids)
            else:
                time.sleep(0.5)

    def _note(self, text: str) -> None:
        """A passing remark: drawn in place on a terminal, a line otherwise
        (once: a remark repeated while waiting is not printed again)."""
        if text == getattr(self, "_noted", None):
            return
        self._noted = text
        if self.tty:
            self._draw(text)
        else:
            self.stdout.write(text)

    def _draw(self, text: str) -> None:
        if self.tty:
            self.stdout.write("\r\x1b[2K" + text, ending="")
            self.stdout.flush()

    def _finish_line(self) -> None:
        if self.tty:
            self.stdout.write("")

    def _summary(self, counts: dict[str, int], tally: Tally | None) -> None:
        self.stdout.write(
            f"rows: {counts['read']} read, {counts['new']} new run(s), "
            f"{counts['existing']} already submitted, {counts['invalid']} invalid"
        )
        if tally is None:
            return
        outcomes = ", ".join(f"{name} {n}" for name, n in sorted(tally.outcomes.items()))
        self.stdout.write(
            f"runs: done {tally.done}{f' ({outcomes})' if outcomes else ''}, waiting for review "
            f"{tally.review}, failed {tally.failed}, cancelled {tally.cancelled}, still queued or "
            f"running {tally.queued + tally.running}; spent ${tally.cost:.4f}"
        )


# Rows ------------------------------------------------------------------------------


def read_rows(path: Path, schema: dict[str, Any]) -> Iterator[Row]:
    """The rows of a .csv or .jsonl file, each with its input and key (or the
    reason it cannot be submitted)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(path, schema)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(path)
    else:
        raise CommandError(f"{path.name}: expected a .csv or .jsonl file")
    for row in rows:
        if row.input is not None and not row.problem:
            row.key = row_key(row.input)
            row.input.pop("id", None)
        yield row


def _csv_rows(path: Path, schema: dict[str, Any]) -> Iterator[Row]:
    types = {name: spec.get("type") for name, spec in (schema.get("properties") or {}).items()}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        line = 2
        for number, raw in enumerate(reader, start=1):
            if None in raw:
                yield Row(number, line, None, problem="more values than columns in the header")
            else:
                values = {k.strip(): v.strip() for k, v in raw.items() if k and v and v.strip()}
                yield Row(number, line, {k: _coerce(v, types.get(k)) for k, v in values.items()})
            line = reader.line_num + 1


def _coerce(value: str, kind: Any) -> Any:
    """A CSV string as the type the input schema asks for (left as it is
    when it does not convert: the schema check then names the field)."""
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
    except ValueError:
        return value
    if kind == "boolean" and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    return value


def _jsonl_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8-sig") as handle:
        number = 0
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            number += 1
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield Row(number, line, None, problem=f"not valid JSON ({exc.msg})")
                continue
            if not isinstance(value, dict):
                yield Row(number, line, None, problem="not a JSON object")
                continue
            yield Row(number, line, value)


def row_key(row: dict[str, Any]) -> str:
    """The run's idempotency key: the row's `id`, or a hash of the row with
    string values trimmed and empty ones left out."""
    given = row.get("id")
    if given not in (None, ""):
        return str(given).strip()[:200]
    normal = {
        k: v.strip() if isinstance(v, str) else v
        for k, v in row.items()
        if v not in (None, "") and not (isinstance(v, str) and not v.strip())
    }
    canonical = json.dumps(normal, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


# Runs ------------------------------------------------------------------------------


def _chunks(ids: list[int], size: int = 500) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _tally(run_ids: list[int]) -> Tally:
    tally = Tally(submitted=len(set(run_ids)))
    outcomes: dict[str, int] = {}
    for chunk in _chunks(sorted(set(run_ids))):
        rows = (
            Run.objects.filter(pk__in=chunk)
            .values("status", "wait_reason", "outcome")
            .annotate(n=Count("id"), cost=Sum("cost_usd"))
        )
        for row in rows:
            n, status = row["n"], row["status"]
            tally.cost += row["cost"] or 0
            if status == RunStatus.QUEUED:
                tally.queued += n
            elif status == RunStatus.WAITING and row["wait_reason"] in HUMAN_WAITS:
                tally.review += n
            elif status in (RunStatus.RUNNING, RunStatus.WAITING):
                tally.running += n
            elif status == RunStatus.SUCCEEDED:
                tally.done += n
                outcomes[row["outcome"]] = outcomes.get(row["outcome"], 0) + n
            elif status == RunStatus.CANCELLED:
                tally.cancelled += n
            else:  # failed, stopped
                tally.failed += n
    tally.outcomes = outcomes
    return tally


def _advance(run_ids: list[int]) -> None:
    """One pass of the engine over the runs still moving (`--inline`)."""
    claimed = False
    for chunk in _chunks(sorted(set(run_ids))):
        moving = Run.objects.filter(pk__in=chunk).exclude(status__in=TERMINAL_STATUSES)
        moving = moving.exclude(status=RunStatus.WAITING, wait_reason__in=HUMAN_WAITS)
        for run_id in moving.values_list("pk", flat=True):
            claimed |= engine.advance_run(run_id) is not engine.Advance.NOT_CLAIMED
    if not claimed:
        time.sleep(0.2)  # nothing claimable now: a backoff or a limit is running out
