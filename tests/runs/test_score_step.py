"""The score step: a rubric's criteria asked of the model, totalled, routed."""

from __future__ import annotations

import pytest

from policies.models import Rubric
from policies.rubrics import save_rubric
from runs import engine
from runs.engine import store
from runs.engine.registry import KINDS
from runs.models import Run, Score, StepCacheEntry, StepRun
from tests.clock import lapse_lease
from tests.conftest import drive
from tests.testapp import providers

CRITERIA = [
    {"key": "fit", "description": "Company size and industry match our ICP.", "weight": 3},
    {"key": "intent", "description": "The lead asked for a demo or pricing.", "weight": 1},
]
ROUTES = [
    {"min": 70, "route": "outreach"},
    {"min": 40, "route": "nurture"},
    {"min": 0, "route": "archive"},
]
# fit 80 when the company has 100+ employees (else 20); intent 60 when the
# lead asked for a demo (else 0).
POINTS = [
    {"criterion": "fit", "add": 80, "when": {"path": "input.employees", "op": ">=", "value": 100}},
    {"criterion": "fit", "add": 20, "when": {"path": "input.employees", "op": "<", "value": 100}},
    {"criterion": "intent", "add": 60, "when": {"path": "input.demo", "op": "==", "value": True}},
]
ENDS = [
    {"key": key, "kind": "end", "config": {"outcome": key, "success": key != "review"}}
    for key in ("outreach", "nurture", "archive", "review")
]


@pytest.fixture
def rubric(db) -> Rubric:
    rubric = Rubric(name="icp", criteria=CRITERIA, routes=ROUTES)
    save_rubric(rubric=rubric, by="test")
    return rubric


def score_step(*, edges=None, **config) -> dict:
    return {
        "key": "score",
        "kind": "score",
        "edges": edges
        or {"outreach": "outreach", "nurture": "nurture", "archive": "archive", "escape": "review"},
        "config": {
            "provider": "scripted",
            "tier": "fast",
            "prompt": "Score this inbound lead from {{ input.company }}.",
            "rubric": "icp",
            "subject": "{{ input.company }}",
            "scripted": {"points": POINTS, "reply": {"criteria": "{{ points.criteria }}"}},
            **config,
        },
    }


def run(version, **lead) -> Run:
    lead = {"company": "Acme", "employees": 250, "demo": True, **lead}
    return drive(engine.start_run(workflow=version.workflow, input=lead).run.pk)


def step_of(run: Run) -> StepRun:
    return StepRun.objects.get(run=run, step_key="score", status="succeeded")


def test_scripted_criteria_are_totalled_routed_and_recorded(make_workflow, rubric):
    version = make_workflow([score_step(), *ENDS])
    done = run(version)
    step = step_of(done)
    # (3 * 80 + 1 * 60) / 4 = 75 -> outreach
    assert step.output == {
        "rubric": "icp",
        "rubric_version": 1,
        "subject": "Acme",
        "criteria": {"fit": 80, "intent": 60},
        "total": 75.0,
        "route": "outreach",
        "reasons": {},
    }
    assert step.edge == "outreach" and done.outcome == "outreach"
    # The model was told the criteria after the configured prompt.
    prompt = step.input["prompt"]
    assert prompt.startswith("Score this inbound lead from Acme.")
    assert "- fit: Company size and industry match our ICP." in prompt
    assert "Subject: Acme" in prompt and "0 (not at all) to 100" in prompt
    score = Score.objects.get(run=done)
    assert (score.seq, score.step_key, score.subject) == (step.seq, "score", "Acme")
    assert score.rubric_version == rubric.versions.get(number=1)
    assert (score.criteria, score.total, score.route) == (
        {"fit": 80, "intent": 60},
        75.0,
        "outreach",
    )


def test_each_route_takes_its_own_edge(make_workflow, rubric):
    version = make_workflow([score_step(), *ENDS])
    # fit 20, intent 60 -> 30 archive; fit 80, intent 0 -> 60 nurture
    assert run(version, employees=10).outcome == "archive"
    assert run(version, demo=False).outcome == "nurture"
    assert sorted(Score.objects.values_list("route", flat=True)) == ["archive", "nurture"]


def test_a_new_rubric_version_routes_new_runs_and_leaves_old_records_alone(make_workflow, rubric):
    version = make_workflow([score_step(), *ENDS])
    before = run(version, demo=False)  # 60 -> nurture under v1
    rubric.routes = [{"min": 55, "route": "outreach"}, *ROUTES[1:]]
    save_rubric(rubric=rubric, by="manager")
    after = run(version, demo=False)  # 60 -> outreach under v2
    assert (before.outcome, after.outcome) == ("nurture", "outreach")
    old, new = Score.objects.get(run=before), Score.objects.get(run=after)
    assert (old.rubric_version.number, old.route) == (1, "nurture")
    assert (new.rubric_version.number, new.route) == (2, "outreach")
    assert step_of(before).output["rubric_version"] == 1
    assert step_of(after).output["rubric_version"] == 2


def test_publish_names_a_missing_route_edge_and_an_unknown_rubric(make_workflow, rubric):
    no_archive = score_step(edges={"outreach": "outreach", "nurture": "nurture"})
    kind = KINDS["score"]
    config = kind.Config.model_validate(no_archive["config"])
    assert kind.check_edges(config, no_archive["edges"]) == [
        "rubric 'icp' v1 has route 'archive', which has no edge"
    ]
    with pytest.raises(engine.PublishError) as refused:
        make_workflow([no_archive, *ENDS[:2]])
    assert "step 'score' (score): rubric 'icp' v1 has route 'archive', which has no edge" in (
        refused.value.problems
    )
    with pytest.raises(engine.PublishError) as refused:
        make_workflow([score_step(rubric="nope"), *ENDS])
    assert "step 'score' (score): no rubric named 'nope'" in refused.value.problems
    with pytest.raises(engine.PublishError) as refused:
        make_workflow([score_step(edges={**score_step()["edges"], "vip": "outreach"}), *ENDS])
    assert "step 'score' (score): edge 'vip' is not an outcome of a score step" in (
        refused.value.problems
    )
    with pytest.raises(engine.PublishError) as refused:
        make_workflow([score_step(output_schema={"type": "object"}), *ENDS])
    assert any("output_schema comes from the rubric" in p for p in refused.value.problems)


def test_a_route_added_after_publish_fails_the_step_naming_it(make_workflow, rubric):
    version = make_workflow([score_step(), *ENDS])
    rubric.routes = [{"min": 75, "route": "vip"}, *ROUTES]
    save_rubric(rubric=rubric, by="manager")
    assert run(version, demo=False).outcome == "nurture"  # 60: routes with edges still work
    failed = run(version)  # 75 -> vip, which the published workflow has no edge for
    assert failed.status == "failed" and failed.dead_lettered_at is not None
    assert "'vip'" in failed.error and "has no 'vip' edge" in failed.error
    attempts = StepRun.objects.filter(run=failed, step_key="score")
    assert [a.error_type for a in attempts] == ["no_edge"]  # not retried
    assert not Score.objects.filter(run=failed).exists()
    assert failed.llm_calls == 1  # what the step spent is charged


def test_a_step_executed_again_after_a_crash_reuses_its_score_row(
    make_workflow, rubric, monkeypatch
):
    version = make_workflow(
        [
            score_step(
                provider="sequence",
                scripted={"replies": [{"text": '{"criteria": {"fit": 90, "intent": 30}}'}]},
            ),
            *ENDS,
        ]
    )
    real = store.checkpoint
    crashed = []

    def crash_once(state, update, record):
        if record is not None and record["step_key"] == "score" and not crashed:
            crashed.append(record)
            raise RuntimeError("worker died before the checkpoint")
        return real(state, update, record)

    monkeypatch.setattr(store, "checkpoint", crash_once)
    providers.calls.clear()
    run_id = engine.start_run(workflow=version.workflow, input={"company": "Acme"}).run.pk
    with pytest.raises(RuntimeError):
        engine.advance_run(run_id)
    assert Score.objects.filter(run_id=run_id).count() == 1  # written before the crash
    # The lease runs out; another worker picks the run up at the same step.
    lapse_lease(run_id)
    done = drive(run_id)
    assert done.outcome == "outreach"  # (3 * 90 + 30) / 4 = 75
    assert Score.objects.filter(run_id=run_id).count() == 1
    assert len(providers.calls) == 1  # the recorded scores were not bought again
    assert step_of(done).output["criteria"] == {"fit": 90, "intent": 30}


def test_a_malformed_reply_is_repaired_with_the_error_fed_back(make_workflow, rubric):
    replies = [
        {"text": '{"criteria": {"fit": 90}}'},
        {"text": '{"criteria": {"fit": 90, "intent": 50}, "reasons": {"fit": "Big fleet."}}'},
    ]
    version = make_workflow([score_step(provider="sequence", scripted={"replies": replies}), *ENDS])
    providers.calls.clear()
    done = run(version)
    assert done.outcome == "outreach" and done.llm_calls == 2
    repair = providers.calls[1].repairs[0][1]
    assert "intent" in repair and "required" in repair
    assert step_of(done).output["reasons"] == {"fit": "Big fleet."}
    assert Score.objects.get(run=done).total == 80.0


def test_a_reply_still_malformed_escapes_to_review_with_no_score(make_workflow, rubric):
    replies = [{"text": '{"criteria": {"fit": 190, "intent": 50}}'}, {"text": "no idea"}]
    version = make_workflow([score_step(provider="sequence", scripted={"replies": replies}), *ENDS])
    done = run(version)
    assert done.outcome == "review"
    step = StepRun.objects.get(run=done, step_key="score")
    assert step.edge == "escape" and "not JSON" in step.output["reason"]
    assert not Score.objects.filter(run=done).exists()


def test_scores_are_cached_per_rubric_version_and_every_run_is_recorded(make_workflow, rubric):
    step = score_step(
        provider="sequence",
        scripted={"replies": [{"text": '{"criteria": {"fit": 60, "intent": 20}}'}]},
    )
    version = make_workflow([{**step, "cache_ttl_s": 3600}, *ENDS])
    providers.calls.clear()
    first, second = run(version), run(version)
    assert len(providers.calls) == 1
    assert step_of(second).cache_hit and second.llm_calls == 0 and second.cost_usd == 0
    assert step_of(second).cost_saved_usd == step_of(first).cost_usd > 0
    assert Score.objects.filter(run__in=[first, second]).count() == 2
    assert step_of(second).output["total"] == step_of(first).output["total"] == 50.0
    rubric.criteria = [{**CRITERIA[0], "weight": 1}, CRITERIA[1]]
    save_rubric(rubric=rubric, by="manager")
    third = run(version)
    assert len(providers.calls) == 2 and not step_of(third).cache_hit  # a new version misses
    assert step_of(third).output["total"] == 40.0 and third.outcome == "nurture"
    assert StepCacheEntry.objects.filter(step_key="score", filled=True).count() == 2


def test_a_replayed_run_rescores_the_recorded_answer_with_the_newest_rubric(make_workflow, rubric):
    version = make_workflow([score_step(), *ENDS])
    original = run(version, demo=False)  # 60 -> nurture
    rubric.routes = [{"min": 50, "route": "outreach"}, *ROUTES[1:]]
    save_rubric(rubric=rubric, by="manager")
    replayed = drive(engine.replay_run(run_id=original.pk).run.pk)
    assert replayed.outcome == "outreach" and replayed.cost_usd == 0
    assert Score.objects.get(run=replayed).rubric_version.number == 2


@pytest.mark.parametrize("cached", [0, 3600])
def test_an_open_breaker_holds_the_score_step_instead_of_failing_it(
    make_workflow, rubric, settings, cached
):
    """The model's breaker opens on an outage; the next run's score step
    waits on it (no attempt spent, nothing scored or cached) instead of
    failing on the missing scores."""
    settings.BOSUN_BREAKER_FAILURES = 1
    settings.BOSUN_INLINE_WAIT_S = 0
    down = {"provider": "sequence", "fallback": False}
    down["scripted"] = {"replies": [{"error": "overloaded", "retryable": True}]}
    step = {**score_step(**down), "max_attempts": 5, "cache_ttl_s": cached}
    version = make_workflow([step, *ENDS])
    first = drive(engine.start_run(workflow=version.workflow, input={"company": "A"}).run.pk)
    assert (first.status, first.wait_reason) == ("waiting", "retry")
    held = drive(engine.start_run(workflow=version.workflow, input={"company": "B"}).run.pk)
    assert (held.status, held.attempt) == ("waiting", 1)
    assert held.wait_reason.startswith("breaker:llm:sequence:")
    assert not Score.objects.filter(run=held).exists()
    assert not StepCacheEntry.objects.filter(filled=True).exists()
