"""Console search: runs by the entity they touched (input, tool calls,
knowledge events), by input field, time window, tool and reason code;
pages and htmx partials, keyset pages, roles."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from approvals.models import ApprovalStatus
from knowledge import services
from knowledge.models import EventType
from runs.models import ToolCallRecord
from tests.console import runs_fixtures as fx
from tests.console.runs_fixtures import add_approval, add_run

pytestmark = pytest.mark.django_db

two_step_version = fx.two_step_version

HX = {"HTTP_HX_REQUEST": "true"}
SEARCH = reverse("console-run-search")


def shown(response, run) -> bool:
    return f'href="/console/runs/{run.pk}/"' in response.content.decode()


def add_call(run, *, tool: str = "crm.upsert", args: dict) -> ToolCallRecord:
    return ToolCallRecord.objects.create(
        run=run,
        seq=1,
        step_key="call",
        tool=tool,
        side_effect="write_idempotent",
        idempotency_key=f"{run.pk}:1:{tool}",
        args=args,
        args_hash="x",
        status="succeeded",
        started_at=timezone.now(),
    )


@pytest.fixture
def acme(db):
    """The account acme.com, also known as `acme-corp`, named "Acme"."""
    entity = services.upsert_entity(type="account", key="acme.com", name="Acme Inc")
    services.add_alias(entity=entity, key="acme-corp")
    return entity


def test_an_account_search_finds_runs_by_input_tool_call_and_knowledge_event(
    client_for, two_step_version, acme
):
    by_input = add_run(two_step_version, input={"domain": "acme.com"})
    by_name = add_run(two_step_version, input={"company": "Acme Inc"})
    by_alias = add_run(two_step_version, input={"company": "acme-corp"})
    by_call = add_run(two_step_version, input={"lead": 7})
    add_call(by_call, args={"domain": "acme.com", "stage": "won"})
    by_event = add_run(two_step_version, input={})
    kind = EventType.objects.create(name="outreach.paused")
    services.record_event(
        entity=acme, type=kind, payload={}, source_run_id=by_event.pk, source_seq=1
    )
    other = add_run(two_step_version, input={"domain": "globex.com", "note": "acme"})
    client = client_for("viewer")
    # The text is normalised as a key: a URL of the domain names the account.
    page = client.get(SEARCH, {"q": "https://www.Acme.com/"})
    assert page.status_code == 200
    for run in (by_input, by_name, by_alias, by_call, by_event):
        assert shown(page, run), run.input
    assert not shown(page, other)
    assert f'href="/console/entities/{acme.pk}/"' in page.content.decode()


def test_an_account_search_finds_runs_naming_it_by_an_address_or_a_website(
    client_for, two_step_version, acme
):
    by_email = add_run(two_step_version, input={"email": "Dana <dana@acme.com>"})
    by_site = add_run(two_step_version, input={"website": "https://www.acme.com/pricing"})
    by_alias_site = add_run(two_step_version, input={"website": "http://acme-corp.io"})
    services.add_alias(entity=acme, key="acme-corp.io")
    by_call = add_run(two_step_version, input={})
    add_call(by_call, tool="outreach.send", args={"to": "bo@acme.com", "body": "Hi"})
    lookalike = add_run(two_step_version, input={"email": "eve@notacme.com"})
    sub = add_run(two_step_version, input={"website": "https://acme.com.evil.io/"})
    for text in ("acme.com", "Acme Inc"):
        page = client_for("viewer").get(SEARCH, {"q": text})
        for run in (by_email, by_site, by_alias_site, by_call):
            assert shown(page, run), (text, run.input)
        assert not shown(page, lookalike) and not shown(page, sub)


def test_an_email_search_finds_the_persons_runs_and_not_others(client_for, two_step_version, acme):
    # An address names the person, not every run of the account's domain.
    bob = add_run(two_step_version, input={"email": "bob@acme.com"})
    eve = add_run(two_step_version, input={"email": "eve@acme.com"})
    page = client_for("viewer").get(SEARCH, {"q": " Bob@Acme.com "})
    assert shown(page, bob) and not shown(page, eve)


def test_a_field_search_matches_the_value_at_that_field_only(client_for, two_step_version):
    hit = add_run(two_step_version, input={"domain": "acme.com", "size": 50})
    elsewhere = add_run(two_step_version, input={"website": "acme.com"})
    nested = add_run(two_step_version, input={"lead": {"tier": "gold"}})
    client = client_for("viewer")
    page = client.get(SEARCH, {"field": "domain=acme.com"})
    assert shown(page, hit) and not shown(page, elsewhere)
    # A value that reads as JSON matches as that value too.
    assert shown(client.get(SEARCH, {"field": "size=50"}), hit)
    assert shown(client.get(SEARCH, {"field": "lead.tier=gold"}), nested)


def test_a_field_search_that_is_not_field_equals_value_says_how_to_write_it(client_for):
    client = client_for("viewer")
    page = client.get(SEARCH, {"field": "acme.com"})
    assert page.status_code == 400
    assert "field=value" in page.content.decode()
    partial = client.get(SEARCH, {"field": "acme.com"}, **HX)
    assert partial.status_code == 200  # htmx swaps only 2xx
    assert 'role="alert"' in partial.content.decode()


def test_the_time_window_tool_and_reason_code_narrow_the_runs(client_for, two_step_version):
    now = timezone.now()
    old = add_run(two_step_version, input={"n": 1}, created_at=now - timedelta(days=3))
    new = add_run(two_step_version, input={"n": 2}, created_at=now - timedelta(hours=1))
    add_call(old, tool="enrich.company", args={"domain": "acme.com"})
    add_approval(new, status=ApprovalStatus.REJECTED, decision_code="off_tone")
    add_approval(old, status=ApprovalStatus.PENDING, decision_code="off_tone")
    client = client_for("viewer")
    start = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    window = client.get(SEARCH, {"start": start})
    assert shown(window, new) and not shown(window, old)
    tool = client.get(SEARCH, {"tool": "enrich.company"})
    assert shown(tool, old) and not shown(tool, new)
    reason = client.get(SEARCH, {"reason": "off_tone"})
    assert shown(reason, new) and not shown(reason, old)  # pending is not decided


def test_the_results_come_as_a_fragment_for_htmx_and_page_by_keyset(client_for, two_step_version):
    runs = [add_run(two_step_version, input={"domain": "acme.com"}) for _ in range(52)]
    client = client_for("viewer")
    whole = client.get(SEARCH, {"q": "acme.com"})
    assert "<html" in whole.content.decode()
    first = client.get(SEARCH, {"q": "acme.com"}, **HX)
    body = first.content.decode()
    assert "<html" not in body and body.lstrip().startswith('<div id="search-results">')
    assert shown(first, runs[-1]) and not shown(first, runs[1])
    older = client.get(SEARCH + first.context["page"]["older"], **HX)
    assert shown(older, runs[1]) and shown(older, runs[0]) and not shown(older, runs[-1])
    newer = client.get(SEARCH + older.context["page"]["newer"], **HX)
    assert [run.pk for run in newer.context["runs"]] == [run.pk for run in first.context["runs"]]
    assert whole["Vary"].count("HX-Request") == 1


def test_no_criterion_shows_no_runs(client_for, two_step_version):
    run = add_run(two_step_version, input={"domain": "acme.com"})
    page = client_for("viewer").get(SEARCH)
    assert page.status_code == 200 and not shown(page, run)


def test_search_needs_the_permission_to_see_runs(client_for):
    assert client_for(None).get(SEARCH, {"q": "acme.com"}).status_code == 403
    assert client_for(None).get(SEARCH, {"q": "acme.com"}, **HX).status_code == 403
    anonymous = client_for("anonymous").get(SEARCH)
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]


def test_a_search_costs_a_fixed_number_of_queries(
    client_for, two_step_version, acme, django_assert_num_queries
):
    for _ in range(3):
        add_run(two_step_version, input={"domain": "acme.com"})
    client = client_for("viewer")
    client.get(SEARCH, {"q": "acme.com"})
    with django_assert_num_queries(16) as few:
        client.get(SEARCH, {"q": "acme.com"})
    for _ in range(10):
        add_run(two_step_version, input={"domain": "acme.com"})
    with django_assert_num_queries(len(few)):
        client.get(SEARCH, {"q": "acme.com"})
