"""The weekly sample review: stratified, reproducible draws, verdicts,
flagged rates and replay sets, in the console and from the command line."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from approvals import sampling
from approvals.models import ReplaySet, SampleItem, SampleReview, SampleVerdict
from policies.models import Rubric
from policies.rubrics import save_rubric
from runs.models import Run, Score, WorkflowVersion
from tests.conftest import race
from tests.console.conftest import ROLES

pytestmark = pytest.mark.django_db
WEEK = "2026-W47"  # Monday 16 November 2026 .. Sunday 22 November
MONDAY = datetime.fromisoformat("2026-11-16T00:00:00+00:00")
HTMX = {"HTTP_HX_REQUEST": "true"}
_subjects = itertools.count(1)


@pytest.fixture
def version(make_workflow) -> WorkflowVersion:
    return make_workflow([{"key": "done", "kind": "end", "config": {}}])


@pytest.fixture
def rubric_version(db):
    rubric = Rubric(
        name="lead-fit",
        criteria=[{"key": "fit", "description": "fit", "weight": 100}],
        routes=[{"min": 70, "route": "outreach"}, {"min": 0, "route": "archive"}],
    )
    return save_rubric(rubric=rubric)


@pytest.fixture
def finished(rubric_version):
    """`finished(version, count, status=, outcome=, route=, at=)`: runs that
    finished during WEEK (or at `at`), scored to `route` if given."""

    def make(version, count, *, status="succeeded", outcome="sent", route=None, at=None):
        runs = []
        for i in range(count):
            run = Run.objects.create(
                workflow=version.workflow,
                version=version,
                status=status,
                outcome=outcome if status == "succeeded" else "",
                finished_at=at or MONDAY + timedelta(hours=1 + i),
            )
            if route:
                Score.objects.create(
                    run=run,
                    seq=1,
                    step_key="score",
                    rubric_version=rubric_version,
                    subject=f"lead {next(_subjects)}",
                    criteria={"fit": 80 if route == "outreach" else 10},
                    total=80 if route == "outreach" else 10,
                    route=route,
                )
            runs.append(run)
        return runs

    return make


@pytest.fixture
def sample(version, finished):
    """A drawn sample of 6 runs: 4 sent, 2 failed."""
    finished(version, 4)
    finished(version, 2, status="failed")
    review, _ = sampling.draw_sample(workflow=version.workflow, week=WEEK, size=6, seed="s")
    return review


# --- the draw ------------------------------------------------------------------------


def test_allocation_is_proportional_with_one_place_for_every_stratum():
    assert sampling.allocate({"a": 80, "b": 15, "c": 5}, 20) == {"a": 16, "b": 3, "c": 1}
    assert sampling.allocate({"a": 97, "b": 1, "c": 1, "d": 1}, 10) == {
        "a": 7,
        "b": 1,
        "c": 1,
        "d": 1,
    }
    # Largest remainders: 10 places over 3 equal strata, ties by name.
    assert sampling.allocate({"x": 30, "y": 30, "z": 30}, 10) == {"x": 4, "y": 3, "z": 3}
    # Fewer runs than places: all of them; empty strata get nothing.
    assert sampling.allocate({"a": 3, "b": 2, "e": 0}, 20) == {"a": 3, "b": 2}
    # More strata than places: the largest strata get one each.
    assert sampling.allocate({"a": 5, "b": 9, "c": 3}, 2) == {"b": 1, "a": 1}


def test_allocation_always_fills_the_size_within_each_stratum():
    for sizes in ({"a": 50, "b": 2, "c": 1}, {"a": 7, "b": 7, "c": 7, "d": 1}, {"a": 1, "b": 40}):
        for size in range(1, 30):
            places = sampling.allocate(sizes, size)
            assert sum(places.values()) == min(size, sum(sizes.values()))
            assert all(0 < places[name] <= sizes[name] for name in places)
            if size >= len(sizes):
                assert set(places) == set(sizes)


def test_a_plan_is_reproducible_from_its_seed_whatever_the_pool_order():
    pool = [sampling.Candidate(i, "sent" if i % 4 else "failed") for i in range(1, 101)]
    first = sampling.plan_sample(pool, size=20, seed="abc")
    assert sampling.plan_sample(list(reversed(pool)), size=20, seed="abc") == first
    assert sampling.plan_sample(pool, size=20, seed="xyz") != first
    assert Counter(c.stratum for c in first) == {"sent": 15, "failed": 5}
    assert len({c.run_id for c in first}) == 20


def test_strata_are_outcomes_and_score_routes(version, finished):
    finished(version, 30, route="outreach")
    finished(version, 8, outcome="dropped", route="archive")
    finished(version, 1, status="failed")
    finished(version, 1, status="cancelled")
    finished(version, 5, outcome="dropped")
    # Not in the week, a replay, and a run still going: never sampled.
    finished(version, 3, at=MONDAY - timedelta(seconds=1))
    finished(version, 3, at=MONDAY + timedelta(days=7))
    original = finished(version, 1)[0]
    Run.objects.create(
        workflow=version.workflow,
        version=version,
        status="succeeded",
        finished_at=MONDAY,
        replay_of=original,
    )
    Run.objects.create(workflow=version.workflow, version=version, status="waiting")

    review, created = sampling.draw_sample(workflow=version.workflow, week=WEEK, seed="s1")
    assert created and (review.size, review.seed) == (20, "s1")
    strata = Counter(review.items.values_list("stratum", flat=True))
    assert strata == {
        "sent / outreach": 12,
        "dropped / archive": 3,
        "dropped": 2,
        "sent": 1,
        "failed": 1,
        "cancelled": 1,
    }
    weeks = {sampling.week_of(item.run.finished_at) for item in review.items.all()}
    assert weeks == {WEEK}
    assert not review.items.filter(run__replay_of__isnull=False).exists()


def test_a_week_is_drawn_once_per_workflow(version, finished):
    finished(version, 30)
    first, created = sampling.draw_sample(workflow=version.workflow, week=WEEK, size=5)
    again, created_again = sampling.draw_sample(workflow=version.workflow, week=WEEK, size=9)
    assert created and not created_again and again.pk == first.pk
    assert SampleReview.objects.count() == 1 and SampleItem.objects.count() == 5


def test_the_same_seed_draws_the_same_runs_again(version, finished, make_workflow):
    finished(version, 40)
    finished(version, 10, outcome="dropped")
    review, _ = sampling.draw_sample(workflow=version.workflow, week=WEEK, seed="redo")
    drawn = sorted(review.items.values_list("run_id", flat=True))
    review.delete()
    again, _ = sampling.draw_sample(workflow=version.workflow, week=WEEK, seed=review.seed)
    assert sorted(again.items.values_list("run_id", flat=True)) == drawn


def test_bad_weeks_are_refused():
    for week in ("2026-47", "2026-W60", "W47", "2026-W00"):
        with pytest.raises(ValueError):
            sampling.week_bounds(week)
    assert sampling.week_bounds("2026-W53")[0].isoformat() == "2026-12-28T00:00:00+00:00"
    assert sampling.last_full_week(MONDAY + timedelta(days=8)) == WEEK


def test_the_command_draws_every_workflow_of_the_week(version, finished, make_workflow):
    other = make_workflow([{"key": "done", "kind": "end", "config": {}}])
    finished(version, 12)
    finished(other, 3)
    out = StringIO()
    call_command("sample_week", "--week", WEEK, "--size", "5", "--seed", "cmd", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines == sorted(
        [
            f"{WEEK} {version.workflow.slug}: 5 runs, drawn (seed cmd)",
            f"{WEEK} {other.workflow.slug}: 3 runs, drawn (seed cmd)",
        ]
    )
    out = StringIO()
    call_command("sample_week", "--week", WEEK, stdout=out)
    assert out.getvalue().count("already drawn") == 2
    assert SampleReview.objects.count() == 2
    with pytest.raises(CommandError, match="no week"):
        call_command("sample_week", "--week", "2026-W61")
    with pytest.raises(CommandError, match="at least 1"):
        call_command("sample_week", "--week", WEEK, "--size", "0")
    out = StringIO()
    call_command("sample_week", "--week", "2026-W40", stdout=out)
    assert out.getvalue() == "2026-W40: no runs finished that week.\n"


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_draws_of_one_week_make_one_sample(version, finished):
    finished(version, 30)
    results = race(
        8,
        lambda i: sampling.draw_sample(workflow=version.workflow, week=WEEK, seed=f"s{i}"),
    )
    assert all(isinstance(r, tuple) for r in results), results
    assert sum(created for _, created in results) == 1
    assert {review.pk for review, _ in results} == {SampleReview.objects.get().pk}
    assert SampleItem.objects.count() == 20


# --- verdicts, rates, replay sets -------------------------------------------------------


def test_verdicts_give_the_flagged_rate_per_week_and_per_version(sample):
    items = list(sample.items.order_by("id"))
    sampling.review_item(item_id=items[0].pk, verdict="flagged", category="tone", note="curt")
    sampling.review_item(item_id=items[1].pk, verdict="ok")
    sampling.review_item(item_id=items[2].pk, verdict="ok")
    sampling.review_item(item_id=items[3].pk, verdict="ok")
    (week,) = sampling.flagged_rates(by="week")
    assert (week["review__week"], week["reviewed"], week["flagged"], week["rate"]) == (
        WEEK,
        4,
        1,
        0.25,
    )
    (per_version,) = sampling.flagged_rates(by="version")
    assert (per_version["run__version__number"], per_version["rate"]) == (1, 0.25)
    with pytest.raises(sampling.InvalidInput, match="category"):
        sampling.review_item(item_id=items[4].pk, verdict="flagged")


def test_flagged_runs_are_added_to_a_replay_set_once(sample, make_workflow):
    items = list(sample.items.order_by("id"))
    for item in items[:2]:
        sampling.review_item(item_id=item.pk, verdict="flagged", category="wrong_decision")
    replay_set, added = sampling.add_flagged_to_replay_set(review=sample, name="regressions")
    assert added == 2 and replay_set.workflow_id == sample.workflow_id
    assert set(replay_set.runs.values_list("pk", flat=True)) == {i.run_id for i in items[:2]}
    sampling.review_item(item_id=items[2].pk, verdict="flagged", category="tone")
    assert sampling.add_flagged_to_replay_set(review=sample, name="regressions")[1] == 1
    assert ReplaySet.objects.get().runs.count() == 3

    foreign = make_workflow([{"key": "done", "kind": "end", "config": {}}])
    ReplaySet.objects.create(name="theirs", workflow=foreign.workflow)
    with pytest.raises(sampling.InvalidInput, match="another workflow"):
        sampling.add_flagged_to_replay_set(review=sample, name="theirs")


# --- pages ----------------------------------------------------------------------------


def test_the_sample_list_is_a_full_page_or_a_partial(sample, client_for):
    client = client_for("reviewer")
    page = client.get("/console/review/sample/")
    assert page.status_code == 200 and b"<html" in page.content
    assert f'href="/console/review/sample/{sample.pk}/"'.encode() in page.content
    partial = client.get("/console/review/sample/", **HTMX)
    assert b"<html" not in partial.content
    assert partial.content.lstrip().startswith(b'<section id="samples">')


def test_the_sample_page_is_a_full_page_or_a_partial(sample, client_for):
    client = client_for("viewer")
    url = reverse("console-sample-detail", args=[sample.pk])
    page = client.get(url)
    assert page.status_code == 200 and b"<html" in page.content
    assert page.content.decode().count('class="card sample-item"') == 6
    partial = client.get(url, **HTMX)
    assert partial.content.lstrip().startswith(b'<section id="sample-items">')
    assert client.get(reverse("console-sample-detail", args=[999999])).status_code == 404


def test_a_reviewer_marks_runs_with_and_without_htmx(sample, client_for):
    client = client_for("reviewer", username="quinn")
    first, second = sample.items.order_by("id")[:2]
    url = reverse("console-sampleitem-review", args=[first.pk])
    partial = client.post(url, {"verdict": "flagged", "category": "tone", "note": "curt"}, **HTMX)
    assert partial.status_code == 200
    assert partial.content.lstrip().startswith(f'<article id="item-{first.pk}"'.encode())
    assert b"Tone or style" in partial.content and b"quinn" in partial.content
    first.refresh_from_db()
    assert (first.verdict, first.category, first.note, first.reviewed_by) == (
        "flagged",
        "tone",
        "curt",
        client.user,
    )
    page = client.post(reverse("console-sampleitem-review", args=[second.pk]), {"verdict": "ok"})
    assert page.status_code == 302
    assert page["Location"] == f"/console/review/sample/{sample.pk}/#item-{second.pk}"
    assert SampleItem.objects.get(pk=second.pk).verdict == "ok"
    listing = client.get("/console/review/sample/").content.decode()
    assert "50 %" in listing  # one of two reviewed runs flagged


def test_a_flag_without_a_category_is_refused_and_the_note_kept(sample, client_for):
    client = client_for("reviewer")
    item = sample.items.first()
    url = reverse("console-sampleitem-review", args=[item.pk])
    partial = client.post(url, {"verdict": "flagged", "note": "odd"}, **HTMX)
    assert b"Pick a category for a flagged run." in partial.content
    assert b'value="odd"' in partial.content
    page = client.post(url, {"verdict": "flagged", "note": "odd"}, follow=True)
    assert b"Pick a category for a flagged run." in page.content
    assert SampleItem.objects.get(pk=item.pk).verdict == SampleVerdict.PENDING


def test_flagged_runs_go_to_a_replay_set_from_the_page(sample, client_for):
    client = client_for("operator")
    item = sample.items.first()
    sampling.review_item(item_id=item.pk, verdict="flagged", category="other")
    url = reverse("console-sample-replay", args=[sample.pk])
    response = client.post(url, {"name": "tone-issues"}, **HTMX)
    assert response["HX-Redirect"] == f"/console/review/sample/{sample.pk}/"
    assert list(ReplaySet.objects.get(name="tone-issues").runs.all()) == [item.run]
    page = client.get(response["HX-Redirect"]).content.decode()
    assert "0 flagged run(s) added" not in page and "1 flagged run(s) added" in page
    bad = client.post(url, {"name": "Not a slug!"}, follow=True)
    assert b"Not added: name:" in bad.content


def test_the_week_can_be_drawn_from_the_page(version, finished, client_for):
    finished(version, 7)
    client = client_for("reviewer")
    response = client.post("/console/review/sample/draw/", {"week": WEEK, "size": "5"}, **HTMX)
    assert response["HX-Redirect"] == "/console/review/sample/"
    assert SampleReview.objects.get().items.count() == 5
    page = client.post("/console/review/sample/draw/", {"week": "2026-W61", "size": "5"})
    assert page.status_code == 302
    assert b"there is no week 2026-W61" in client.get("/console/review/sample/").content


@pytest.mark.parametrize("role", [*ROLES, None, "anonymous"])
def test_who_may_see_mark_draw_and_keep_samples(role, sample, client_for):
    client = client_for(role)
    item = sample.items.first()
    pages = [
        client.get("/console/review/sample/"),
        client.get(reverse("console-sample-detail", args=[sample.pk])),
    ]
    posts = {
        "mark": client.post(
            reverse("console-sampleitem-review", args=[item.pk]), {"verdict": "ok"}
        ),
        "draw": client.post("/console/review/sample/draw/", {"week": WEEK, "size": "3"}),
        "keep": client.post(reverse("console-sample-replay", args=[sample.pk]), {"name": "kept"}),
    }
    if role == "anonymous":
        assert all(r.status_code == 302 and "/accounts/login/" in r["Location"] for r in pages)
        assert all(
            r.status_code == 302 and "/accounts/login/" in r["Location"] for r in posts.values()
        )
        return
    if role is None:
        assert [r.status_code for r in pages] == [403, 403]
        assert [r.status_code for r in posts.values()] == [403, 403, 403]
        return
    assert [r.status_code for r in pages] == [200, 200]
    may = {
        "mark": role == "reviewer",
        "draw": role == "reviewer",
        "keep": role in ("reviewer", "operator"),
    }
    assert {name: r.status_code != 403 for name, r in posts.items()} == may
    detail = pages[1].content.decode()
    assert ('name="verdict"' in detail) is may["mark"]
    assert ('action="/console/review/sample/draw/"' in pages[0].content.decode()) is may["draw"]
    assert (SampleItem.objects.get(pk=item.pk).verdict == "ok") is may["mark"]


def test_sample_posts_need_a_csrf_token(sample, client_for):
    client = client_for("reviewer", csrf=True)
    item = sample.items.first()
    url = reverse("console-sampleitem-review", args=[item.pk])
    assert client.post(url, {"verdict": "ok"}, **HTMX).status_code == 403
    assert client.post("/console/review/sample/draw/", {"week": WEEK}).status_code == 403
    assert SampleItem.objects.get(pk=item.pk).verdict == SampleVerdict.PENDING


def test_the_sample_pages_cost_a_fixed_number_of_queries(
    version, finished, client_for, django_assert_num_queries
):
    client = client_for("reviewer")
    finished(version, 3)
    review, _ = sampling.draw_sample(workflow=version.workflow, week=WEEK, size=3)
    url = reverse("console-sample-detail", args=[review.pk])
    client.get(url)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        client.get(url)
    review.delete()
    finished(version, 30)
    review, _ = sampling.draw_sample(workflow=version.workflow, week=WEEK, size=25)
    with django_assert_num_queries(len(few)):
        page = client.get(reverse("console-sample-detail", args=[review.pk]))
    assert page.content.decode().count('class="card sample-item"') == 25


def test_samples_and_replay_sets_are_in_admin(sample, make_user, client):
    sampling.review_item(item_id=sample.items.first().pk, verdict="flagged", category="tone")
    sampling.add_flagged_to_replay_set(review=sample, name="kept")
    client.force_login(make_user(superuser=True))
    changelist = client.get("/admin/approvals/samplereview/").content.decode()
    assert WEEK in changelist and 'class="field-drawn">6<' in changelist
    assert 'class="field-flagged">1<' in changelist
    assert client.get(f"/admin/approvals/samplereview/{sample.pk}/change/").status_code == 200
    assert client.get("/admin/approvals/sampleitem/?verdict=flagged").status_code == 200
    replay_sets = client.get("/admin/approvals/replayset/").content.decode()
    assert "kept" in replay_sets and 'class="field-run_count">1<' in replay_sets
    assert client.get("/admin/approvals/approvalrequest/").status_code == 200
