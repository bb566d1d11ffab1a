"""Every console page, and the admin's workflow page, pass axe-core with no
serious or critical violation (contrast, names, labels, landmarks…), and
none scrolls sideways on a 1366 px wide screen.

axe-core is bundled by axe-playwright-python (no CDN, no download). The
context bypasses the page's Content-Security-Policy only so that axe's own
script can be injected; the pages are otherwise as served.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from axe_playwright_python.sync_playwright import Axe
from django.contrib.auth.models import User
from django.utils import timezone

from approvals.models import ApprovalRequest, SampleItem, SampleReview
from evals.experiments import start_experiment
from evals.shadow import start_shadow
from knowledge import services
from knowledge.models import EventType
from policies.models import Breaker
from runs import engine
from runs.engine.definition import freeze_candidate
from runs.engine.switches import set_switch
from runs.models import Rollout, Run
from runs.views_timesplit import local_bound
from tests.conftest import chain, drive, waiting_for_review
from tests.console import conftest as console
from tests.console.runs_fixtures import add_run
from tests.evals import conftest as evals

review_workflow = console.review_workflow
pending_approval = console.pending_approval
pending_tool_call = console.pending_tool_call
outreach = evals.outreach
eval_set = evals.eval_set
pytestmark = [pytest.mark.django_db(transaction=True)]

SEVERE = ("serious", "critical")
WIDTH = 1366  # the narrowest screen the console is laid out for


@pytest.fixture
def browser_context_args(browser_context_args):
    return {**browser_context_args, "bypass_csp": True}


def severe(results) -> list[str]:
    """The serious and critical violations, one line per failing element."""
    found = []
    for violation in results.response["violations"]:
        if violation["impact"] not in SEVERE:
            continue
        for node in violation["nodes"]:
            found.append(
                f"{violation['impact']} {violation['id']}: {violation['help']}"
                f" at {' '.join(node['target'])}: {node['html'][:160]}"
            )
    return found


def console_pages(make_workflow, pending_approval, pending_tool_call) -> dict[str, str]:
    """One of every console page, with something on it."""
    review = pending_approval(sla_s=600, escalate_to="manager")
    tool_call = pending_tool_call
    run_id = waiting_for_review(make_workflow)
    version = Run.objects.get(pk=run_id).version
    now = timezone.now()
    for day in range(3):
        add_run(
            version, success=True, cost="0.02", created_at=now - timedelta(days=day), latency_ms=900
        )
        add_run(
            version,
            status="failed",
            dead=True,
            latency_ms=10,
            created_at=now - timedelta(days=day),
            current_step="review",
            error="review: it broke",
            steps=[{"step_key": "review", "status": "failed", "error_type": "timeout"}],
        )
    sample = SampleReview.objects.create(workflow=version.workflow, week="2026-W48", seed="s")
    SampleItem.objects.create(review=sample, run_id=run_id, stratum="done")
    Breaker.objects.create(key="vendor:enrichco")
    since = local_bound(now - timedelta(days=7))
    # A kill switch engaged: every page carries its banner.
    set_switch(scope="tool", target="test.send", engaged=True, reason="vendor incident", by="ada")
    return {
        "home": "/console/",
        "dashboard": "/console/dashboard/",
        "runs list": "/console/runs/",
        "runs list, drilled down": f"/console/runs/?workflow={version.workflow.slug}"
        f"&version={version.pk}&approvals=decided&created_from={since}",
        "run detail": f"/console/runs/{run_id}/",
        "dead letters": "/console/dead-letters/",
        "review queue": "/console/review/",
        "review focus": "/console/review/focus/",
        "review detail": f"/console/review/{review.pk}/",
        "tool-call review": f"/console/review/{tool_call.pk}/",
        "bulk decisions": f"/console/review/bulk/?shape={_shape(tool_call)}",
        "sample list": "/console/review/sample/",
        "sample detail": f"/console/review/sample/{sample.pk}/",
        "breakers": "/console/breakers/",
        "admin workflow": f"/admin/runs/workflow/{version.workflow_id}/change/",
    }


def _shape(request: ApprovalRequest) -> str:
    from approvals.views_bulk import shape_of

    return shape_of(request.draft).replace("(", "%28").replace(")", "%29")


SCHEMA = {
    "type": "object",
    "required": ["domain"],
    "properties": {
        "domain": {"type": "string", "title": "Domain", "description": "The account's domain"},
        "seats": {"type": "integer", "minimum": 1, "title": "Seats"},
        "tier": {"enum": ["gold", "silver"], "title": "Tier"},
        "trial": {"type": "boolean", "title": "On a trial"},
        "contact": {"type": "object", "title": "Contact"},
    },
}
END = {"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}}


def workflow_pages(make_workflow, outreach, eval_set, settings) -> dict[str, str]:
    """The workflow, version, search, entity, rollout, lane, experiment and
    shadow pages, each with something on it."""
    # Two versions, the second a canary on a quarter of new runs, runs on both.
    v1 = make_workflow(
        chain({"key": "enrich", "kind": "tool", "config": {"tool": "echo"}}, END),
        slug="lead-intake",
        input_schema=SCHEMA,
    )
    workflow = v1.workflow
    workflow.steps.filter(key="enrich").update(config={"tool": "echo", "args": {"value": 2}})
    engine.publish_workflow(workflow=workflow, canary_share=25)
    runs = [
        drive(engine.start_run(workflow=workflow, input={"domain": "acme.com"}).run.pk)
        for _ in range(6)
    ]
    rollout = Rollout.objects.get(workflow=workflow)
    # An account with a pause written by one of those runs.
    acme = services.upsert_entity(type="account", key="acme.com", name="Acme Inc")
    services.record_event(
        entity=acme,
        type=EventType.objects.create(name="outreach.paused"),
        payload={"channel": "email"},
        reason="asked us to stop",
        valid_until=timezone.now() + timedelta(days=14),
        source_run_id=runs[0].pk,
        source_seq=1,
        source_step_key="enrich",
    )
    # An autonomy lane: two calls held for approval, both approved as they stood.
    settings.BOSUN_LANE_STREAK = 2
    send = {"key": "send", "kind": "tool", "config": {"tool": "test.send", "args": {"to": "a"}}}
    lane = make_workflow(
        chain(send, END), policy={"autonomy": [{"tool": "test.send", "mode": "approve"}]}
    ).workflow
    for _ in range(2):
        held = drive(engine.start_run(workflow=lane, input={}).run.pk)
        request = ApprovalRequest.objects.get(run=held)
        engine.decide_approval(approval_id=request.pk, approve=True, actor_label="ana")
    # An experiment of the draft against v1, then the draft in shadow.
    evals.set_subject(outreach.workflow, "Hi {{ input.company }}")
    experiment = evals.finish(start_experiment(eval_set=eval_set, versions=[outreach], draft=True))
    settings.BOSUN_SHADOW_QUEUE = "evals.tasks.start_shadow_run"  # inline, not queued
    shadow = start_shadow(
        workflow=outreach.workflow, candidate=freeze_candidate(workflow=outreach.workflow)
    )
    live = evals.live_run(outreach, "Acme", approve=True)
    drive(Run.objects.get(shadow_of=live).pk)
    # A draft whose graph marks the step Publish would refuse.
    broken = {"key": "enrich", "kind": "tool", "config": {"tool": "echo"}, "edges": {"next": "x"}}
    draft = make_workflow([broken, END], publish=False, slug="draft-with-a-problem")
    return {
        "admin workflow, draft with a problem": f"/admin/runs/workflow/{draft.pk}/change/",
        "workflows": "/console/workflows/",
        "workflow": "/console/workflows/lead-intake/",
        "workflow, run again": f"/console/workflows/lead-intake/?from_run={runs[0].pk}",
        "versions": "/console/workflows/lead-intake/versions/",
        "version": "/console/workflows/lead-intake/versions/2/",
        "version diff": "/console/workflows/lead-intake/diff/?a=1&b=2",
        "run detail, finished": f"/console/runs/{live.pk}/",
        "search": "/console/search/?q=acme.com",
        "entity": f"/console/entities/{acme.pk}/",
        "rollouts": "/console/rollouts/",
        "rollout": "/console/rollouts/lead-intake/",
        "rollout comparison": f"/console/rollout/{rollout.pk}/comparison/",
        "canaries": "/console/dashboard/canaries/",
        "lanes": "/console/lanes/",
        "lane": f"/console/lanes/{lane.policy_id}/test.send/",
        "experiments": "/console/experiments/",
        "experiment": f"/console/experiments/{experiment.pk}/",
        "shadows": "/console/shadows/",
        "shadow": f"/console/shadows/{shadow.pk}/",
    }


@pytest.fixture
def every_page(
    make_workflow, pending_approval, pending_tool_call, outreach, eval_set, settings
) -> dict[str, str]:
    User.objects.create_superuser("ada", "ada@example.com", "correct horse 42")
    return {
        **console_pages(make_workflow, pending_approval, pending_tool_call),
        **workflow_pages(make_workflow, outreach, eval_set, settings),
    }


def log_in(page, live_server) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password]", "correct horse 42")
    page.click("button[type=submit]")
    page.wait_for_load_state()


def visit(page, live_server, name: str, path: str) -> None:
    response = page.goto(f"{live_server.url}{path}")
    assert response is not None and response.ok, f"{name}: {path} answered {response}"
    page.wait_for_load_state()


def test_every_console_page_has_no_serious_or_critical_violation(live_server, page, every_page):
    pages = every_page
    log_in(page, live_server)
    login = severe(Axe().run(page))
    failures = {"login": login} if login else {}
    for name, path in pages.items():
        visit(page, live_server, name, path)
        results = Axe().run(page)
        assert results.response["testEngine"]["name"] == "axe-core", name
        found = severe(results)
        if found:
            failures[name] = found
    if failures:
        report = "\n".join(
            f"{name} ({pages.get(name, '/accounts/login/')}):\n  " + "\n  ".join(lines)
            for name, lines in failures.items()
        )
        print(report)
        pytest.fail(f"serious or critical accessibility violations:\n{report}")


def test_no_console_page_scrolls_sideways_at_1366_pixels(live_server, page, every_page):
    page.set_viewport_size({"width": WIDTH, "height": 900})
    log_in(page, live_server)
    wide = {}
    for name, path in every_page.items():
        visit(page, live_server, name, path)
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > WIDTH:
            wide[name] = width
    assert wide == {}, f"pages wider than {WIDTH} px: {wide}"
