"""The economics benchmark's baseline is a real agent loop, not a number."""

from __future__ import annotations

from django.conf import settings

from bench.naive_agent import NaiveAgent
from demo.models import VendorCall
from policies.rubrics import latest_version
from runs.llm.base import get_provider
from runs.llm.scripted import estimate_tokens
from runs.models import StepRun
from tests.samples.conftest import NURTURE, OUTREACH, run_of


def agent(**kwargs) -> NaiveAgent:
    return NaiveAgent(
        provider=get_provider("scripted"),
        model=settings.BOSUN_MODEL_TIERS["balanced"],
        rubric=latest_version("icp").snapshot,
        **kwargs,
    )


def enrichments() -> int:
    return VendorCall.objects.filter(vendor="enrichco", credits__gt=0).count()


def test_it_enriches_every_record_it_sees(samples):
    bot = agent()
    first = bot.process(1, NURTURE)
    again = bot.process(2, {**NURTURE, "company": "UMBRELLA"})
    assert first.route == again.route == "nurture"
    assert enrichments() == 2
    turns = [a.calls for a in first.attempts]
    assert turns == [4]  # normalize, enrich, score, finish: one model call each


def test_it_routes_a_lead_as_the_sample_workflow_does(samples):
    done = agent().process(1, OUTREACH)
    assert done.route == "outreach" and done.sends == 1
    run = run_of("lead-qualification", NURTURE)
    assert StepRun.objects.get(run=run, step_key="score").output["route"] == "nurture"
    assert agent().process(2, NURTURE).route == "nurture"


def test_a_crash_restarts_the_record_from_scratch(samples):
    done = agent(crash_at_score=lambda seq: seq == 7).process(7, NURTURE)
    assert done.crashes == 1 and len(done.attempts) == 2
    assert done.enrichments == 2 == enrichments()  # paid again after the restart
    lost = done.attempts[0]
    assert done.respent_tokens == lost.tokens_in + lost.tokens_out > 0
    assert lost.calls == 3  # normalize, enrich, score: all asked again


def test_every_turn_resends_the_whole_conversation(samples):
    bot = agent()
    done = bot.process(1, NURTURE)
    # Four turns, each with the system prompt (task, rubric, tool schemas),
    # the lead and the conversation so far.
    assert done.attempts[0].tokens_in > 4 * estimate_tokens(bot.system)
