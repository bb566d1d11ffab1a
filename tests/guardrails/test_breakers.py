"""Circuit breakers held in the database, on whichever database the suite runs.

The vendor is `test.flaky` (limit key `vendor:flaky`): down (503) while the
switch `flaky.down` is on, refusing the request (422) while `flaky.invalid`
is. Time is moved in the database (tests/clock.py), never slept.
"""

from __future__ import annotations

import itertools

import pytest

from policies.models import AuditEntry, Breaker
from runs import engine
from runs.engine import breakers
from runs.engine.errors import BreakerOpen
from runs.models import Run
from tests.clock import (
    age_breaker_failures,
    age_wall_time,
    expire_probe,
    let_cooldown_pass,
    let_wait_pass,
)
from tests.conftest import chain, drive, race
from tests.testapp import providers
from tests.testapp.models import Execution, Switch

pytestmark = pytest.mark.django_db
KEY = "vendor:flaky"
WAITING = "breaker:vendor:flaky"
END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}


@pytest.fixture(autouse=True)
def _three_failures_open(settings):
    settings.BOSUN_BREAKER_FAILURES = 3
    settings.BOSUN_BREAKER_COOLDOWN_S = 30.0
    settings.BOSUN_BREAKER_MAX_COOLDOWN_S = 120.0
    settings.BOSUN_INLINE_WAIT_S = 0  # every backoff parks the run


@pytest.fixture
def flaky(make_workflow):
    """A workflow of one call to the flaky vendor; `start()` starts a run."""
    version = make_workflow(
        chain(
            {"key": "call", "kind": "tool", "config": {"tool": "test.flaky"}, "max_attempts": 10},
            END,
        )
    )

    def start() -> int:
        return engine.start_run(workflow=version.workflow, input={}).run.pk

    return start


def vendor(*, down: bool = False, invalid: bool = False) -> None:
    Switch.objects.update_or_create(name="flaky.down", defaults={"on": down})
    Switch.objects.update_or_create(name="flaky.invalid", defaults={"on": invalid})


def calls() -> int:
    return Execution.objects.filter(step_key="call").count()


def breaker() -> Breaker:
    return Breaker.objects.get(key=KEY)


def actions() -> list[str]:
    return list(
        AuditEntry.objects.filter(target_type="policies.breaker")
        .order_by("id")
        .values_list("action", flat=True)
    )


def open_it(start) -> int:
    """Three runs' calls fail: the breaker opens. Returns the third run,
    which waits for its retry."""
    vendor(down=True)
    for _ in range(3):
        run_id = start()
        drive(run_id, limit=1)
    assert breaker().state == "open"
    return run_id


def test_it_opens_after_the_threshold_of_consecutive_outage_failures(flaky, settings):
    vendor(down=True)
    first, second = flaky(), flaky()
    drive(first, limit=1)
    drive(second, limit=1)
    assert breaker().state == "closed" and breaker().failures == 2
    let_wait_pass(first)
    drive(first, limit=1)  # its second attempt: the third failure in a row
    found = breaker()
    assert (found.state, found.failures, found.opened_count) == ("open", 3, 1)
    assert "503" in found.last_errors[0]["error"] and len(found.last_errors) == 3
    assert actions() == ["breaker.opened"]
    assert calls() == 3


def test_a_run_finding_it_open_waits_without_calling_or_spending_an_attempt(flaky):
    open_it(flaky)
    made = calls()
    waiting = drive(flaky())
    assert (waiting.status, waiting.wait_reason, waiting.attempt) == ("waiting", WAITING, 1)
    assert waiting.lease_owner == "" and waiting.not_before is not None
    assert not waiting.step_runs.exists()  # no attempt recorded
    # Its safety-net timer rings: it looks again, still open, and waits again.
    for _ in range(3):
        let_wait_pass(waiting.pk)
        waiting = drive(waiting.pk)
        assert (waiting.status, waiting.attempt) == ("waiting", 1)
    assert calls() == made


def test_a_run_in_retry_finding_it_open_keeps_its_attempt(flaky):
    retrying = open_it(flaky)
    before = Run.objects.get(pk=retrying)
    assert before.wait_reason == "retry"
    let_wait_pass(retrying)
    after = drive(retrying)
    assert (after.wait_reason, after.attempt) == (WAITING, before.attempt)


def test_a_non_retryable_answer_does_not_count(flaky):
    vendor(invalid=True)
    for _ in range(5):
        assert drive(flaky()).status == "failed"  # fails fast: a 422
    assert not Breaker.objects.filter(key=KEY, failures__gt=0).exists()
    assert calls() == 5
    assert drive(flaky()).status == "failed"  # still called: nothing is held
    assert calls() == 6


def test_an_answer_between_outage_failures_starts_the_count_again(flaky):
    vendor(down=True)
    for _ in range(2):
        drive(flaky(), limit=1)
    vendor(invalid=True)  # the vendor answers (a 4xx): it is up
    drive(flaky())
    vendor(down=True)
    for _ in range(2):
        drive(flaky(), limit=1)
    assert (breaker().state, breaker().failures) == ("closed", 2)


def test_failures_older_than_the_window_do_not_add_up(flaky, settings):
    settings.BOSUN_BREAKER_WINDOW_S = 60.0
    vendor(down=True)
    for _ in range(2):
        drive(flaky(), limit=1)
    age_breaker_failures(KEY, seconds=61)
    drive(flaky(), limit=1)
    assert (breaker().state, breaker().failures) == ("closed", 1)


def test_after_the_cool_down_one_probe_at_a_time_and_a_dead_probe_expires(flaky):
    open_it(flaky)
    with pytest.raises(BreakerOpen):
        breakers.admit((KEY,), holder="a", hold_s=10)
    let_cooldown_pass(KEY)
    probe = breakers.admit((KEY,), holder="a", hold_s=10)
    assert probe.probing == (KEY,) and breaker().state == "half_open"
    with pytest.raises(BreakerOpen) as held:
        breakers.admit((KEY,), holder="b", hold_s=10)
    assert held.value.why == "probing"
    expire_probe(KEY)  # the prober died mid-call
    assert breakers.admit((KEY,), holder="c", hold_s=10).probing == (KEY,)
    assert breaker().probe_holder == "c"
    assert actions() == ["breaker.opened", "breaker.probing", "breaker.probing"]


def test_a_probe_that_makes_no_call_gives_the_slot_back(flaky):
    open_it(flaky)
    let_cooldown_pass(KEY)
    breakers.admit((KEY,), holder="a", hold_s=10).abandon()
    assert breaker().state == "open"
    assert breakers.admit((KEY,), holder="b", hold_s=10).probing == (KEY,)


def test_the_sweeper_lets_one_waiting_run_probe_and_its_success_resumes_the_others(flaky, settings):
    settings.BOSUN_BREAKER_RESUME_PER_S = 10.0
    open_it(flaky)
    waiting = [drive(flaky()).pk for _ in range(4)]
    assert breakers.nominate_probers() == []  # still cooling down
    let_cooldown_pass(KEY)
    vendor()  # the vendor is back
    prober = breakers.nominate_probers()
    assert prober == [waiting[0]]  # one run, the oldest
    assert breakers.nominate_probers() == []  # no second while the first is on its way
    due = Run.objects.filter(pk__in=waiting, not_before__lte=_now())
    assert list(due.values_list("pk", flat=True)) == prober
    assert drive(prober[0]).status == "succeeded"
    assert breaker().state == "closed"
    assert actions() == ["breaker.opened", "breaker.probing", "breaker.closed"]
    # The others are due again, paced 0.1 s apart, the oldest first.
    rest = list(Run.objects.filter(pk__in=waiting[1:]).order_by("not_before"))
    assert [run.pk for run in rest] == waiting[1:]
    gaps = [(b.not_before - a.not_before).total_seconds() for a, b in itertools.pairwise(rest)]
    assert all(0.09 < gap < 0.2 for gap in gaps), gaps
    for run in rest:
        let_wait_pass(run.pk)
        done = drive(run.pk)
        assert (done.status, done.attempt) == ("succeeded", 1)


def test_a_failed_probe_reopens_it_for_longer_and_its_run_waits_again(flaky):
    open_it(flaky)
    run_id = drive(flaky()).pk
    let_cooldown_pass(KEY)
    assert breakers.nominate_probers() == [run_id]
    made = calls()
    after = drive(run_id)
    assert calls() == made + 1  # the probe
    assert (after.status, after.wait_reason, after.attempt) == ("waiting", WAITING, 1)
    assert not after.step_runs.exists()
    found = breaker()
    assert (found.state, found.trips) == ("open", 2)
    # 30 s doubled; `since` and `open_until` are two readings of the
    # database clock in one statement, a few microseconds apart.
    assert 59.99 < (found.open_until - found.since).total_seconds() < 60.01
    assert actions()[-1] == "breaker.reopened"


def test_a_run_parking_as_the_breaker_closes_is_not_left_behind(flaky):
    open_it(flaky)
    run_id = drive(flaky()).pk
    # The breaker closed between the run's look and its park: the close's
    # wake-up found the run still running. The park looks once more.
    Breaker.objects.filter(key=KEY).update(state="closed")
    Run.objects.filter(pk=run_id).update(not_before=None)
    breakers.wake_if_closed(run_id, WAITING)
    assert Run.objects.filter(pk=run_id, not_before__lte=_now()).exists()


def test_a_disabled_breaker_holds_nothing(flaky):
    open_it(flaky)
    Breaker.objects.filter(key=KEY).update(enabled=False)
    vendor()
    assert drive(flaky()).status == "succeeded"


def test_breakers_off_hold_nothing(flaky, settings):
    open_it(flaky)
    settings.BOSUN_BREAKERS = False
    vendor()
    assert drive(flaky()).status == "succeeded"


def test_a_model_call_has_a_breaker_per_provider_and_model(make_workflow):
    providers.calls.clear()
    step = {
        "key": "ask",
        "kind": "llm",
        "max_attempts": 1,
        "config": {
            "provider": "sequence",
            "model": "claude-haiku-4-5",
            "prompt": "hi",
            "scripted": {"replies": [{"error": "overloaded", "retryable": True}]},
        },
    }
    version = make_workflow(chain(step, END))
    for _ in range(3):
        assert (
            drive(engine.start_run(workflow=version.workflow, input={}).run.pk).status == "failed"
        )
    key = "llm:sequence:claude-haiku-4-5"
    assert Breaker.objects.get(key=key).state == "open"
    held = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert (held.status, held.wait_reason, held.attempt) == ("waiting", f"breaker:{key}", 1)
    assert len(providers.calls) == 3


def test_a_repair_turn_is_not_held_so_the_answer_it_repairs_stays_charged(make_workflow):
    providers.calls.clear()
    step = {
        "key": "ask",
        "kind": "llm",
        "config": {
            "provider": "tripping",
            "model": "test-priced",
            "prompt": "hi",
            "output_schema": {"type": "object", "required": ["total"]},
            "max_repairs": 1,
        },
    }
    version = make_workflow(chain(step, END))
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert Breaker.objects.get(key="llm:tripping:test-priced").state == "open"
    assert run.status == "succeeded" and len(providers.calls) == 2
    assert run.llm_calls == 2 and str(run.model_usd) == "0.140000"  # both turns, $0.07 each


def test_a_long_key_gets_a_short_distinct_wait_reason():
    a = engine.errors.breaker_wait_reason("llm:anthropic:claude-sonnet-4-5-20250929")
    b = engine.errors.breaker_wait_reason("llm:anthropic:claude-sonnet-4-5-20250930")
    assert len(a) <= 40 and len(b) <= 40 and a != b
    assert a.startswith("breaker:llm:anthropic:claude-")


def _now():
    from django.utils import timezone

    return timezone.now()


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_of_concurrent_probers_exactly_one_probes():
    """Eight sessions ask at the same moment, ten times over: one probe each time."""
    for round_ in range(10):
        Breaker.objects.update_or_create(
            key=KEY,
            defaults={"state": "open", "open_until": _now(), "probe_holder": "", "trips": 1},
        )

        def ask(index: int, round_: int = round_) -> str:
            try:
                guard = breakers.admit((KEY,), holder=f"{round_}-{index}", hold_s=10)
            except BreakerOpen as exc:
                return exc.why
            return "probe" if guard.probing else "closed"

        results = race(8, ask)
        assert sorted(results) == ["probe"] + ["probing"] * 7, results
        assert actions().count("breaker.probing") == round_ + 1


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_failures_are_each_counted_and_open_it_once():
    # Six calls let through while it was closed fail at the same moment.
    guards = [breakers.admit((KEY,), holder=f"h{index}", hold_s=10) for index in range(6)]

    def fail(index: int) -> None:
        with pytest.raises(TimeoutError), guards[index].call():
            raise TimeoutError("no answer")

    assert race(6, fail) == [None] * 6
    found = breaker()
    assert found.state == "open" and found.opened_count == 1
    assert len(found.last_errors) == 5
    assert actions() == ["breaker.opened"]


def test_dead_runs_retried_while_the_breaker_is_open_wait_on_it_without_calling(
    make_workflow, make_user, client
):
    """Retrying a dead-letter group honours the breaker: the check is at the
    call, so retried runs wait on it instead of hammering the vendor."""
    version = make_workflow(
        chain(
            {"key": "call", "kind": "tool", "config": {"tool": "test.flaky"}, "max_attempts": 1},
            END,
        )
    )
    vendor(down=True)
    dead = [drive(engine.start_run(workflow=version.workflow, input={}).run.pk) for _ in range(3)]
    assert {run.status for run in dead} == {"failed"} and breaker().state == "open"
    client.force_login(make_user("operator"))
    page = client.get("/console/dead-letters/").content.decode()
    assert "attempts exhausted on a retryable error" in page  # the group's cause
    before = calls()
    for run in dead:
        engine.retry_run(run_id=run.pk)
        retried = drive(run.pk)
        assert (retried.status, retried.wait_reason) == ("waiting", WAITING)
    assert calls() == before


def test_a_breaker_open_too_long_is_reported_once_per_outage(
    flaky, settings, make_user, mailoutbox, monkeypatch, django_capture_on_commit_callbacks
):
    settings.BOSUN_BREAKER_ALERT_S = 600.0
    settings.BOSUN_ALERT_WEBHOOK_URL = "https://chat.example/hook"
    posted: list[dict] = []
    monkeypatch.setattr(
        "lib.notify.httpx2.post",
        lambda url, json, **kwargs: (
            posted.append(json) or type("R", (), {"raise_for_status": lambda self: None})()
        ),
    )
    operator = make_user("operator")
    open_it(flaky)
    waiting = flaky()
    assert drive(waiting).wait_reason == WAITING
    with django_capture_on_commit_callbacks(execute=True):
        assert breakers.alert_long_outages() == []  # open, but not for long yet
    age_breaker_failures(KEY, seconds=601)
    with django_capture_on_commit_callbacks(execute=True):
        engine.sweep()  # the sweep reports it
        assert breakers.alert_long_outages() == []  # told once per outage
    assert [m.to for m in mailoutbox] == [[operator.email]]
    assert KEY in mailoutbox[0].subject and "1 run(s) wait on it" in mailoutbox[0].body
    assert posted[0]["event"] == "breaker.open_too_long" and posted[0]["breaker"] == KEY
    assert actions().count("breaker.alerted") == 1


def test_a_run_that_waits_on_a_breaker_past_its_wall_time_budget_is_dead_lettered(
    make_workflow, make_user, client
):
    """The workflow's patience is its policy's wall-time budget: an outage
    shorter than it dead-letters nothing; one that outlasts it dead-letters
    the waiting run with the cause, for an operator to look at."""
    version = make_workflow(
        chain(
            {"key": "call", "kind": "tool", "config": {"tool": "test.flaky"}, "max_attempts": 9},
            END,
        ),
        policy={"max_wall_s": 3600},
    )

    def start() -> int:
        return engine.start_run(workflow=version.workflow, input={}).run.pk

    open_it(start)
    waiting = drive(start())
    assert waiting.wait_reason == WAITING
    age_wall_time(waiting.pk, seconds=3000)
    engine.sweep()
    assert Run.objects.get(pk=waiting.pk).status == "waiting"  # within its patience
    age_wall_time(waiting.pk, seconds=700)
    engine.sweep()
    dead = Run.objects.get(pk=waiting.pk)
    assert (dead.status, dead.wait_reason) == ("failed", "")
    assert dead.dead_lettered_at is not None and f"waiting on breaker {KEY}" in dead.error
    record = dead.step_runs.get(seq=dead.seq, attempt=dead.attempt)
    assert (record.error_type, record.retryable) == ("outage", True)
    # what the dead-letter queue reads
    assert (dead.dead_step, dead.dead_error_type, dead.dead_retryable) == ("call", "outage", True)
    client.force_login(make_user("operator"))
    page = client.get("/console/dead-letters/").content.decode()
    assert "an outage outlasted the wall-time budget" in page
    # Retried, with a fresh allowance: it waits on the breaker again.
    engine.retry_run(run_id=dead.pk)
    assert drive(dead.pk).wait_reason == WAITING
