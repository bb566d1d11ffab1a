"""The limit primitives, on whichever database the suite runs."""

from __future__ import annotations

import pytest

from policies.models import Limit, RateGrant
from runs import engine
from runs.engine import limits
from runs.models import Run
from tests.clock import expire_hold, let_rate_period_pass, let_wait_pass
from tests.conftest import chain, drive

pytestmark = pytest.mark.django_db


def test_seats_are_taken_up_to_the_cap_and_given_back():
    Limit.objects.create(key="vendor:x", max_in_flight=2)
    first = limits.acquire(keys=("vendor:x",), holder="a", hold_s=30)
    second = limits.acquire(keys=("vendor:x",), holder="b", hold_s=30)
    with pytest.raises(limits.Throttled) as full:
        limits.acquire(keys=("vendor:x",), holder="c", hold_s=30)
    assert full.value.kind == "concurrency"
    assert limits.in_flight("vendor:x") == 2
    assert limits.release(first) == ["vendor:x"]
    assert limits.acquire(keys=("vendor:x",), holder="c", hold_s=30)
    assert limits.release(second) == ["vendor:x"]


def test_a_seat_held_by_a_dead_worker_frees_itself_when_its_hold_ends():
    Limit.objects.create(key="vendor:x", max_in_flight=1)
    limits.acquire(keys=("vendor:x",), holder="dead", hold_s=30)
    with pytest.raises(limits.Throttled):
        limits.acquire(keys=("vendor:x",), holder="alive", hold_s=30)
    expire_hold("vendor:x", "dead")  # the dead holder's time runs out
    assert limits.acquire(keys=("vendor:x",), holder="alive", hold_s=30)


def test_a_rate_lets_r_calls_through_then_says_how_long_to_wait():
    Limit.objects.create(key="api", rate=3, period_s=60)
    for holder in "abc":
        limits.acquire(keys=("api",), holder=holder, hold_s=1)
    with pytest.raises(limits.Throttled) as throttled:
        limits.acquire(keys=("api",), holder="d", hold_s=1)
    assert throttled.value.kind == "rate"
    assert 55 < throttled.value.wait_s <= 60
    assert RateGrant.objects.filter(key="api").count() == 3


def test_a_throttled_call_gives_back_the_seat_it_took():
    Limit.objects.create(key="api", max_in_flight=1, rate=1, period_s=60)
    limits.release(limits.acquire(keys=("api",), holder="a", hold_s=30))
    with pytest.raises(limits.Throttled):
        limits.acquire(keys=("api",), holder="b", hold_s=30)
    assert limits.in_flight("api") == 0


def test_a_run_finding_the_limit_full_waits_holding_no_worker_then_goes_on(make_workflow):
    Limit.objects.create(key="vendor:test", rate=1, period_s=60)
    step = {
        "key": "call",
        "kind": "tool",
        "config": {"tool": "test.inflight", "args": {"sleep_s": 0}},
    }
    version = make_workflow(chain(step, {"key": "done", "kind": "end"}))
    first = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    second = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert first.status == "succeeded"
    assert (second.status, second.wait_reason) == ("waiting", "limit:vendor:test")
    assert second.lease_owner == "" and second.not_before is not None
    assert engine.advance_run(second.pk) is engine.Advance.NOT_CLAIMED  # not due yet
    let_rate_period_pass("vendor:test")
    let_wait_pass(second.pk)
    assert drive(second.pk).status == "succeeded"
    assert Run.objects.filter(status="succeeded").count() == 2
