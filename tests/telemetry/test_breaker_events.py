"""A circuit breaker's transitions are events on the span of the call that
caused them; a call it holds is a `breaker.wait` event and a waiting tool span."""

from __future__ import annotations

import pytest

from runs import engine
from runs.engine import breakers
from tests.clock import let_cooldown_pass
from tests.conftest import chain, drive
from tests.testapp.models import Switch

pytestmark = pytest.mark.django_db
KEY = "vendor:flaky"


def events(trace) -> list[tuple[str, str]]:
    return [
        (span.name, event.name)
        for span in trace.spans
        for event in span.events
        if event.name.startswith("breaker.")
    ]


def test_opening_probing_and_closing_are_span_events(make_workflow, spans, settings):
    settings.BOSUN_BREAKER_FAILURES = 2
    settings.BOSUN_INLINE_WAIT_S = 0
    step = {"key": "call", "kind": "tool", "config": {"tool": "test.flaky"}, "max_attempts": 1}
    version = make_workflow(chain(step, {"key": "done", "kind": "end"}))
    Switch.objects.create(name="flaky.down", on=True)
    for _ in range(3):
        drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    Switch.objects.filter(name="flaky.down").update(on=False)
    let_cooldown_pass(KEY)
    [prober] = breakers.nominate_probers()
    assert drive(prober).status == "succeeded"
    found = events(spans())
    assert found == [
        ("tool test.flaky", "breaker.opened"),
        ("tool test.flaky", "breaker.wait"),
        ("tool test.flaky", "breaker.probing"),
        ("tool test.flaky", "breaker.closed"),
    ]
    opened = next(
        event for span in spans().spans for event in span.events if event.name == "breaker.opened"
    )
    assert opened.attributes["bosun.breaker.key"] == KEY
    assert opened.attributes["bosun.breaker.failures"] == 2
    waited = [s for s in spans().named("tool ") if s.attributes.get("bosun.tool.outcome")]
    assert "breaker_open" in {s.attributes["bosun.tool.outcome"] for s in waited}
