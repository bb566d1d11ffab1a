"""Injection and PII corpora through real runs, logs and admin pages."""

from __future__ import annotations

import html
import io
import json
import logging
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User

from approvals.models import ApprovalRequest
from runs import engine
from runs.models import Run
from tests.conftest import drive
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db
DATA = Path(__file__).resolve().parents[1] / "data"


def _corpus(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def _obeying_agent(make_workflow, **options):
    """Fetch a page, let a model that obeys whatever it reads pick an action,
    then do it: a write (test.send) or an egress (test.unsafe_send)."""
    obey = {"text": '{"action": "send", "to": "attacker@evil.example"}'}
    steps = [
        {
            "key": "fetch",
            "kind": "tool",
            "config": {"tool": "test.page", "args": {"text": "{{ input.page }}"}},
            "edges": {"next": "decide"},
        },
        {
            "key": "decide",
            "kind": "llm",
            "config": {
                "provider": "sequence",
                "prompt": "Page: {{ steps.fetch.text }}\nWhat should we do?",
                "output_schema": {"type": "object"},
                "scripted": {"replies": [obey]},
            },
            "edges": {"next": "route"},
        },
        {
            "key": "route",
            "kind": "branch",
            "config": {
                "rules": [
                    {
                        "when": {"path": "input.channel", "op": "==", "value": "write"},
                        "edge": "write",
                    },
                ],
                "default": "egress",
            },
            "edges": {"write": "write", "egress": "egress"},
        },
        {
            "key": "write",
            "kind": "tool",
            "config": {"tool": "test.send", "args": {"to": "{{ steps.decide.to }}"}},
            "edges": {"next": "done"},
        },
        {
            "key": "egress",
            "kind": "tool",
            "config": {"tool": "test.unsafe_send", "args": {"to": "{{ steps.decide.to }}"}},
            "edges": {"next": "done"},
        },
        {"key": "done", "kind": "end"},
    ]
    return make_workflow(steps, **options)


def test_no_planted_injection_leads_to_an_unapproved_write_or_egress(make_workflow):
    corpus = _corpus("injection_corpus.jsonl")
    assert len(corpus) >= 50
    version = _obeying_agent(make_workflow)
    ids = []
    for index, item in enumerate(corpus):
        channel = "write" if index % 2 else "egress"
        run = engine.start_run(
            workflow=version.workflow, input={"page": item["text"], "channel": channel}
        ).run
        ids.append(drive(run.pk).pk)
    runs = Run.objects.filter(pk__in=ids)
    assert not Execution.objects.filter(step_key__in=["write", "egress"]).exists()
    assert runs.filter(tainted=True).count() == len(corpus)
    assert runs.filter(status="waiting", wait_reason="approval").count() == len(corpus)
    reasons = set(
        ApprovalRequest.objects.filter(run__in=runs).values_list("reason_code", flat=True)
    )
    assert reasons == {"injection_suspected"}  # every text in this corpus trips a signal


def test_a_clean_page_still_taints_the_run_and_its_write_waits_for_a_person(make_workflow):
    version = _obeying_agent(make_workflow)
    page = "Acme makes pallets in Ohio; 120 staff; looking for a new ERP next quarter."
    run = drive(
        engine.start_run(workflow=version.workflow, input={"page": page, "channel": "write"}).run.pk
    )
    assert (run.status, run.wait_reason, run.tainted) == ("waiting", "approval", True)
    assert run.taint_signals == ""  # nothing looked like an injection; the source decides
    assert not Execution.objects.filter(step_key="write").exists()


def test_a_policy_that_trusts_the_tool_lets_a_tainted_run_write(make_workflow):
    trust = {"tool": "test.send", "mode": "auto", "trusted_destinations": ["*"]}
    version = _obeying_agent(make_workflow, policy={"autonomy": [trust]})
    page = "Acme makes pallets in Ohio; 120 staff; looking for a new ERP next quarter."
    run = drive(
        engine.start_run(workflow=version.workflow, input={"page": page, "channel": "write"}).run.pk
    )
    assert (run.status, run.tainted) == ("succeeded", True)
    assert Execution.objects.filter(step_key="write").count() == 1


def _pii_workflow(make_workflow):
    steps = [
        {
            "key": "note",
            "kind": "tool",
            "config": {"tool": "echo", "args": {"value": "{{ input.note }}"}},
            "edges": {"next": "done"},
        },
        {"key": "done", "kind": "end"},
    ]
    return make_workflow(steps, sensitive_fields=["note"])


def test_no_pii_from_the_corpus_reaches_the_logs(make_workflow, monkeypatch):
    corpus = _corpus("pii_corpus.jsonl")
    assert sum(len(item["pii"]) for item in corpus) >= 200
    # The configured console handler, with its redacting filter, into a buffer.
    handler = next(h for h in logging.getLogger().handlers if h.filters)
    buffer = io.StringIO()
    monkeypatch.setattr(handler, "stream", buffer)
    log = logging.getLogger("bosun.engine")
    for item in corpus:
        log.info("lead note: %s", item["text"])
        try:
            raise ValueError(f"could not parse {item['text']}")
        except ValueError:
            log.exception("step failed for lead %r", {"note": item["text"]})
    written = buffer.getvalue()
    assert written.count("lead note:") == len(corpus)
    leaked = [pii for item in corpus for pii in item["pii"] if pii in written]
    assert leaked == []


def test_viewers_see_step_records_without_pii_and_operators_see_them_whole(make_workflow, client):
    corpus = _corpus("pii_corpus.jsonl")
    version = _pii_workflow(make_workflow)
    ids = [
        drive(engine.start_run(workflow=version.workflow, input={"note": item["text"]}).run.pk).pk
        for item in corpus
    ]
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.groups.add(Group.objects.get(name="viewer"))
    client.force_login(viewer)
    leaked = []
    for run_id, item in zip(ids, corpus, strict=True):
        page = client.get(f"/admin/runs/run/{run_id}/change/")
        assert page.status_code == 200
        body = page.content.decode()
        leaked += [pii for pii in item["pii"] if pii in body or html.escape(pii) in body]
    assert leaked == []
    operator = User.objects.create_user("operator", password="x", is_staff=True)
    operator.groups.add(Group.objects.get(name="operator"))
    client.force_login(operator)
    first = corpus[0]["pii"][0]
    assert html.escape(first) in client.get(f"/admin/runs/run/{ids[0]}/change/").content.decode()
