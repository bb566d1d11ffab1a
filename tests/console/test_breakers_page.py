"""The breakers page: state, since when, runs waiting, last errors; closing by hand."""

from __future__ import annotations

import pytest

from policies.models import AuditEntry, Breaker
from runs.engine import breakers
from runs.models import Run
from tests.console import runs_fixtures as fx
from tests.console.runs_fixtures import add_run

pytestmark = pytest.mark.django_db

two_step_version = fx.two_step_version
URL = "/console/breakers/"
HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def open_breaker(two_step_version, settings) -> Breaker:
    """vendor:enrichco opened by three timeouts, with two runs waiting on it."""
    settings.BOSUN_BREAKER_FAILURES = 3
    for _ in range(3):
        guard = breakers.admit(("vendor:enrichco",), holder="x", hold_s=5)
        with pytest.raises(TimeoutError), guard.call():
            raise TimeoutError("enrichco answered nothing")
    Breaker.objects.create(key="llm:anthropic:claude-haiku-4-5")  # closed, no failure
    for _ in range(2):
        add_run(two_step_version, status="waiting", wait_reason="breaker:vendor:enrichco")
    return Breaker.objects.get(key="vendor:enrichco")


def test_it_lists_each_breaker_open_ones_first_with_waiting_runs_and_errors(
    client_for, open_breaker, django_assert_num_queries
):
    client = client_for("viewer")
    page = client.get(URL)
    assert page.status_code == 200
    html = page.content.decode()
    assert html.index("vendor:enrichco") < html.index("llm:anthropic:claude-haiku-4-5")
    assert "Open" in html and "enrichco answered nothing" in html
    row = html[html.index(f'id="breaker-{open_breaker.pk}"') :]
    assert '<td class="num">2</td>' in row[: row.index("</tr>")]
    assert "Close now" not in html  # a viewer may not close it
    # As many queries with more breakers and more runs waiting on them.
    queries = _queries(client)
    for key in ("vendor:mailco", "vendor:billing", "host:api.acme.com"):
        Breaker.objects.create(key=key, state="open")
        add_run(open_breaker_version(), status="waiting", wait_reason=f"breaker:{key}")
    with django_assert_num_queries(queries):
        client.get(URL, **HX)


def open_breaker_version():
    from runs.models import WorkflowVersion

    return WorkflowVersion.objects.latest("id")


def _queries(client) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        client.get(URL, **HX)
    return len(captured)


def test_an_htmx_request_gets_the_table_alone(client_for, open_breaker):
    partial = client_for("operator").get(URL, **HX).content.decode()
    assert partial.lstrip().startswith('<div id="breakers"') and "<html" not in partial


def test_an_operator_closes_it_and_the_waiting_runs_resume(client_for, open_breaker):
    client = client_for("operator")
    assert "Close now" in client.get(URL).content.decode()
    response = client.post(f"{URL}{open_breaker.pk}/close/", {"reason": "vendor says fixed"})
    assert response.status_code == 302
    assert Breaker.objects.get(pk=open_breaker.pk).state == "closed"
    waiting = Run.objects.filter(wait_reason="breaker:vendor:enrichco")
    assert waiting.count() == 2 and not waiting.filter(not_before__isnull=True).exists()
    entry = AuditEntry.objects.filter(action="breaker.closed").latest("id")
    assert entry.actor.startswith("user:") and entry.data["reason"] == "vendor says fixed"


def test_a_viewer_may_not_close_one_and_nobody_logged_out_sees_it(client_for, open_breaker):
    assert client_for("viewer").post(f"{URL}{open_breaker.pk}/close/").status_code == 403
    assert client_for(None).get(URL).status_code == 403
    assert client_for("anonymous").get(URL).status_code == 302
    assert Breaker.objects.get(pk=open_breaker.pk).state == "open"
