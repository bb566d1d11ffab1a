"""`manage.py submit_batch`: one run per row, keyed so nothing starts twice."""

from __future__ import annotations

import csv
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from runs import engine
from runs.models import Run
from tests.samples.conftest import ARCHIVE, NURTURE, OUTREACH

FIELDS = ["id", "company", "email", "first_name", "title", "website", "source"]


class Tty(StringIO):
    def isatty(self) -> bool:
        return True


def submit(*args: str, out: StringIO | None = None) -> tuple[int, str, str]:
    out, err = out or StringIO(), StringIO()
    try:
        call_command("submit_batch", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def leads_csv(tmp_path, samples) -> Path:
    bad = {**ARCHIVE, "id": "form-3", "email": "not an email"}
    rows = [
        {**OUTREACH, "id": "form-1"},
        {**NURTURE, "id": "form-2"},
        bad,
        {**ARCHIVE, "id": "form-4"},
    ]
    return write_csv(tmp_path / "leads.csv", [{k: r.get(k, "") for k in FIELDS} for r in rows])


def test_a_csv_becomes_runs_and_a_bad_row_is_named(leads_csv):
    code, out, err = submit("lead-qualification", str(leads_csv), "--inline")
    assert code == 1  # one row could not be submitted
    assert "row 3 (line 4): email: 'not an email' does not match" in err
    assert "rows: 4 read, 3 new run(s), 0 already submitted, 1 invalid" in out
    runs = Run.objects.order_by("pk")
    assert [r.idempotency_key for r in runs] == ["form-1", "form-2", "form-4"]
    assert "id" not in runs[0].input
    assert {r.status for r in runs} == {"succeeded", "waiting"}
    assert "waiting for review 1 | done 2 | failed 0" in out  # the progress line
    assert "done 2 (archive 1, nurture 1), waiting for review 1" in out


def test_submitting_the_same_file_again_starts_nothing(leads_csv):
    submit("lead-qualification", str(leads_csv), "--no-wait")
    code, out, err = submit("lead-qualification", str(leads_csv), "--no-wait")
    assert "rows: 4 read, 0 new run(s), 3 already submitted, 1 invalid" in out
    assert Run.objects.count() == 3
    assert "row 3" in err


def test_without_an_id_the_key_is_the_normalised_row(tmp_path, samples):
    rows = [{k: OUTREACH.get(k, "") for k in FIELDS if k != "id"}]
    spaced = [{k: f"  {v} " if v else v for k, v in rows[0].items()}]
    first = tmp_path / "a.csv"
    second = tmp_path / "b.csv"
    for path, content in ((first, rows), (second, spaced)):
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS[1:])
            writer.writeheader()
            writer.writerows(content)
    submit("lead-qualification", str(first), "--no-wait")
    code, out, _ = submit("lead-qualification", str(second), "--no-wait")
    assert code == 0 and "0 new run(s), 1 already submitted" in out
    assert Run.objects.get().idempotency_key.startswith("sha256:")


def test_a_jsonl_file_reports_broken_lines_by_number(tmp_path, samples):
    path = tmp_path / "tickets.jsonl"
    lines = [
        json.dumps({"id": "T-13", "ticket_id": "T-13"}),
        "",
        "{not json",
        json.dumps(["T-1"]),
        json.dumps({"ticket_id": "T-1"}),
        json.dumps({"ticket_id": "has spaces"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    code, out, err = submit("support-refund", str(path), "--inline")
    assert code == 1
    assert "row 2 (line 3): not valid JSON" in err
    assert "row 3 (line 4): not a JSON object" in err
    assert "row 5 (line 6): ticket_id: 'has spaces' does not match" in err
    assert "rows: 5 read, 2 new run(s), 0 already submitted, 3 invalid" in out
    assert dict(Run.objects.values_list("idempotency_key", "outcome"))["T-13"] == "refunded"


def test_csv_values_take_the_types_of_the_input_schema(tmp_path, make_workflow):
    version = make_workflow(
        [{"key": "done", "kind": "end", "config": {"outcome": "done"}}],
        slug="typed",
        input_schema={
            "type": "object",
            "required": ["n"],
            "properties": {"n": {"type": "integer"}, "vip": {"type": "boolean"}},
        },
    )
    path = tmp_path / "typed.csv"
    path.write_text("n,vip,note\n5,yes,hello\nfive,no,\n")
    code, out, err = submit(version.workflow.slug, str(path), "--inline")
    assert Run.objects.get().input == {"n": 5, "vip": True, "note": "hello"}
    assert "row 2 (line 3): n: 'five' is not of type 'integer'" in err


def test_a_full_queue_holds_the_next_row_until_a_place_frees_up(tmp_path, make_workflow):
    version = make_workflow(
        [{"key": "done", "kind": "end", "config": {"outcome": "done"}}],
        slug="narrow",
        max_active_runs=1,
    )
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(3)))
    code, out, err = submit(version.workflow.slug, str(path), "--inline")
    assert code == 0 and "queue full at row 2" in out
    assert "rows: 3 read, 3 new run(s)" in out
    assert Run.objects.filter(status="succeeded").count() == 3


def test_ctrl_c_loses_nothing_and_the_next_run_completes_the_file(leads_csv, monkeypatch):
    real = engine.start_run
    calls = []

    def interrupted(**kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(**kwargs)

    monkeypatch.setattr(engine, "start_run", interrupted)
    code, out, _ = submit("lead-qualification", str(leads_csv))
    assert code == 130 and "interrupted: 2 run(s) submitted so far keep running" in out
    assert Run.objects.count() == 2
    monkeypatch.setattr(engine, "start_run", real)
    code, out, _ = submit("lead-qualification", str(leads_csv), "--no-wait")
    assert "1 new run(s), 2 already submitted, 1 invalid" in out
    assert Run.objects.count() == 3


def test_on_a_terminal_the_progress_line_is_redrawn(leads_csv):
    out = Tty()
    submit("lead-qualification", str(leads_csv), "--inline", out=out)
    assert "\r\x1b[2Ksubmitted 3 |" in out.getvalue()


def test_an_unknown_workflow_or_file_type_is_refused(tmp_path, samples):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no workflow 'nope'"):
        call_command("submit_batch", "nope", str(tmp_path / "x.csv"))
    path = tmp_path / "leads.txt"
    path.write_text("company\nAcme\n")
    with pytest.raises(CommandError, match="expected a .csv or .jsonl file"):
        call_command("submit_batch", "lead-qualification", str(path))
