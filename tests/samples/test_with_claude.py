"""With an API key the samples ask Claude: the real SDK against the local fake."""

from __future__ import annotations

import pytest

from approvals.models import ApprovalRequest
from runs.models import StepRun
from tests.fakes.messages_api import MessagesAPI, message, tool_use_block, usage
from tests.samples.conftest import OUTREACH, run_of


@pytest.fixture
def claude(settings):
    api = MessagesAPI()
    with api.serve() as base_url:
        settings.ANTHROPIC_API_KEY = "sk-ant-test"
        settings.ANTHROPIC_BASE_URL = base_url
        settings.BOSUN_DEFAULT_PROVIDER = "anthropic"
        yield api


def test_a_lead_is_scored_and_drafted_by_claude(samples, claude):
    scores = {"company_size": 90, "industry": 80, "market": 40, "seniority": 100}
    claude.reply(message(tool_use_block({"criteria": scores}), usage_=usage(400, 60)))
    draft = {"subject": "Acme Robotics and inbound leads", "body": "Hi Dana, " + "x" * 40}
    claude.reply(message(tool_use_block(draft), model="claude-sonnet-4-6", usage_=usage(300, 120)))
    run = run_of("lead-qualification", OUTREACH)

    assert (run.status, run.wait_reason) == ("waiting", "approval")
    score_request, draft_request = claude.bodies
    assert score_request["model"] == "claude-haiku-4-5"  # the fast tier
    assert "company_size: Headcount fits" in str(score_request["messages"][0]["content"])
    assert draft_request["model"] == "claude-sonnet-4-6"  # the balanced tier
    score = StepRun.objects.get(run=run, step_key="score")
    assert score.provider == "anthropic" and score.output["route"] == "outreach"
    assert score.output["total"] == pytest.approx((90 * 25 + 80 * 35 + 40 * 15 + 100 * 25) / 100)
    assert score.cost_usd > 0 and run.cost_usd > 0
    assert ApprovalRequest.objects.get(run=run).draft == {
        "to": "dana@acme-robotics.example",
        **draft,
    }
