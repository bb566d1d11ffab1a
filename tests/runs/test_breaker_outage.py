"""A provider outage, end to end: the real anthropic SDK against the local
fake of the Messages API (on a loopback port), answering 529 for a
controlled period, then recovering.

The runs are advanced in this process, one at a time, as workers would;
time passes only where the test says so (tests/clock.py): each round, the
runs that can go do, then the backoffs of the retrying runs end, the
breaker's cool-down ends and the sweep runs (which lets one waiting run
probe). Nothing sleeps.
"""

from __future__ import annotations

import pytest

from policies.models import AuditEntry, Breaker
from runs import engine
from runs.models import TERMINAL_STATUSES, Run, StepRun
from tests.clock import let_cooldown_pass, let_wait_pass
from tests.fakes.messages_api import MessagesAPI, Scripted, message, tool_use_block

pytestmark = pytest.mark.django_db
KEY = "llm:anthropic:claude-haiku-4-5"
MAX_ATTEMPTS = 4
SCHEMA = {"type": "object", "required": ["total"], "properties": {"total": {"type": "number"}}}
STEPS = [
    {
        "key": "ask",
        "kind": "llm",
        "edges": {"next": "done", "escape": "done"},
        "max_attempts": MAX_ATTEMPTS,
        "backoff_base_s": 1.0,
        "backoff_cap_s": 4.0,
        "config": {
            "provider": "anthropic",
            "tier": "fast",
            "prompt": "Score {{ input.n }}",
            "output_schema": SCHEMA,
        },
    },
    {"key": "done", "kind": "end", "config": {"outcome": "scored"}},
]


@pytest.fixture
def api(settings):
    """The fake, answering every request with a score unless it is down."""
    fake = MessagesAPI()
    fake.respond = lambda received: Scripted(message(tool_use_block({"total": 70})))
    with fake.serve() as base_url:
        settings.ANTHROPIC_API_KEY = "sk-ant-test-key"
        settings.ANTHROPIC_BASE_URL = base_url
        settings.BOSUN_INLINE_WAIT_S = 0  # every wait parks the run
        settings.BOSUN_BREAKER_FAILURES = 3
        settings.BOSUN_BREAKER_COOLDOWN_S = 20.0
        settings.BOSUN_BREAKER_MAX_COOLDOWN_S = 80.0
        yield fake


class Fleet:
    """Runs of one workflow, advanced round by round."""

    def __init__(self, make_workflow) -> None:
        self.version = make_workflow(STEPS)
        self.ids: list[int] = []

    def start(self, count: int) -> None:
        for _ in range(count):
            run = engine.start_run(workflow=self.version.workflow, input={"n": len(self.ids)})
            self.ids.append(run.run.pk)

    def active(self) -> list[Run]:
        return list(Run.objects.filter(pk__in=self.ids).exclude(status__in=TERMINAL_STATUSES))

    def round(self) -> None:
        """Every run that can go goes; then time passes."""
        moved = True
        while moved:
            moved = False
            for run in self.active():
                moved |= engine.advance_run(run.pk) is not engine.Advance.NOT_CLAIMED
        closed = not Breaker.objects.filter(key=KEY).exclude(state="closed").exists()
        for run in self.active():
            if run.status == "waiting" and (run.wait_reason == "retry" or closed):
                let_wait_pass(run.pk)
        if Breaker.objects.filter(key=KEY, state="open").exists():
            let_cooldown_pass(KEY)
        engine.sweep()


def probes() -> int:
    return AuditEntry.objects.filter(action="breaker.probing", target_id=KEY).count()


def test_runs_before_and_during_an_outage_all_finish_and_the_outage_costs_few_requests(
    api, make_workflow
):
    fleet = Fleet(make_workflow)
    fleet.start(6)  # before the outage
    api.outage(529)
    fleet.round()
    fleet.start(6)  # during it
    rounds = 6
    for _ in range(rounds - 1):
        fleet.round()
    during = len(api.received)
    assert Breaker.objects.get(key=KEY).state == "open"
    api.recover()
    for _ in range(20):
        if not fleet.active():
            break
        fleet.round()

    runs = Run.objects.filter(pk__in=fleet.ids)
    assert runs.count() == 12 and all(run.status == "succeeded" for run in runs)
    assert not runs.filter(dead_lettered_at__isnull=False).exists()
    # During the outage: the three failures that opened it, then one probe a
    # cool-down, whatever the number of runs. Per-run retries would have
    # sent 12 runs x 4 attempts.
    assert during == 3 + probes() - 1  # (the last probe came after the recovery)
    assert probes() <= rounds + 1
    assert during < 12 * MAX_ATTEMPTS / 4
    failed = StepRun.objects.filter(run__in=runs, status="failed").count()
    assert failed == 3  # no run spent an attempt waiting
    actions = list(
        AuditEntry.objects.filter(target_id=KEY).order_by("id").values_list("action", flat=True)
    )
    assert actions[0] == "breaker.opened" and actions[-1] == "breaker.closed"
    assert "breaker.reopened" in actions


def test_without_breakers_the_same_outage_dead_letters_the_runs(api, make_workflow, settings):
    settings.BOSUN_BREAKERS = False
    fleet = Fleet(make_workflow)
    fleet.start(6)
    api.outage(529)
    fleet.round()
    fleet.start(6)
    for _ in range(5):
        fleet.round()
    assert Run.objects.filter(pk__in=fleet.ids, dead_lettered_at__isnull=False).count() == 12
    assert len(api.received) == 12 * MAX_ATTEMPTS
