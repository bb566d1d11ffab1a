"""Rubrics: validation, versions, totals and routes, the re-score preview."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from policies.models import AuditEntry, Rubric, RubricVersion
from policies.rubrics import rescore_preview, route_for, save_rubric, total_for
from runs import engine
from runs.models import Score

CRITERIA = [
    {"key": "fit", "description": "Company size and industry match our ICP.", "weight": 3},
    {"key": "intent", "description": "The lead asked for a demo or pricing.", "weight": 1},
]
ROUTES = [
    {"min": 70, "route": "outreach"},
    {"min": 40, "route": "nurture"},
    {"min": 0, "route": "archive"},
]
# Recorded totals of the fixture's scores, newest last. Lowering outreach
# from 70 to 60 moves exactly the four in [60, 70): 68, 65, 62, 61.
TOTALS = [75, 72, 68, 65, 62, 61, 55, 45, 30, 10]


def route_of(total: float) -> str:
    return route_for({"routes": ROUTES}, total)


@pytest.fixture
def rubric(db) -> Rubric:
    rubric = Rubric(name="icp", criteria=CRITERIA, routes=ROUTES)
    save_rubric(rubric=rubric, by="ana", actor="user:ana")
    return rubric


def record_scores(rubric: Rubric, make_workflow, totals=TOTALS) -> list[Score]:
    """One queued run per total, each with a Score row of the rubric's
    newest version whose criteria both equal the total."""
    version = make_workflow([{"key": "done", "kind": "end", "config": {}}])
    latest = rubric.versions.order_by("-number").first()
    rows = []
    for index, total in enumerate(totals):
        run = engine.start_run(workflow=version.workflow, input={}).run
        rows.append(
            Score.objects.create(
                run=run,
                seq=1,
                step_key="score",
                rubric_version=latest,
                subject=f"Lead {index} ({total})",
                criteria={"fit": total, "intent": total},
                total=total,
                route=route_of(total),
            )
        )
    return rows


def errors_of(**fields) -> dict[str, list[str]]:
    rubric = Rubric(name="r", **{"criteria": CRITERIA, "routes": ROUTES, **fields})
    with pytest.raises(ValidationError) as raised:
        save_rubric(rubric=rubric)
    return raised.value.message_dict


# Validation -------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        ([], "add at least one criterion"),
        ("fit", "criteria must be a list"),
        ([{**CRITERIA[0], "weight": 0}], "criterion 1: weight must be a number above 0"),
        ([{**CRITERIA[0], "weight": "3"}], "criterion 1: weight must be a number above 0"),
        ([{**CRITERIA[0], "key": "Fit score"}], "criterion 1: key 'Fit score' is not a slug"),
        ([CRITERIA[0], CRITERIA[0]], "criterion 2: key 'fit' is used twice"),
        ([{**CRITERIA[0], "description": " "}], "criterion 1: description is missing"),
        ([{**CRITERIA[0], "colour": "red"}], "criterion 1: unknown field colour"),
    ],
)
def test_bad_criteria_are_named(criteria, message):
    errors = errors_of(criteria=criteria)
    assert list(errors) == ["criteria"]
    assert any(m.startswith(message) for m in errors["criteria"]), errors


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ([], "routes must be a non-empty list"),
        (ROUTES[:2], "the last route's min must be 0"),
        ([*ROUTES[:2], {"min": 0, "route": "nurture"}], "route 3: route 'nurture' is named twice"),
        (
            [{"min": 40, "route": "a"}, {"min": 40, "route": "b"}, ROUTES[2]],
            "routes must be sorted",
        ),
        ([{"min": 101, "route": "vip"}, *ROUTES], "route 1: min must be a number from 0 to 100"),
        ([{"min": 90, "route": "escape"}, *ROUTES], "route 1: 'escape' is reserved"),
        ([{"min": 90}, *ROUTES], "route 1: route is missing"),
    ],
)
def test_bad_routes_are_named(routes, message):
    errors = errors_of(routes=routes)
    assert list(errors) == ["routes"]
    assert any(m.startswith(message) for m in errors["routes"]), errors


@pytest.mark.django_db
def test_routes_are_stored_highest_first_and_nothing_is_saved_when_invalid():
    rubric = Rubric(name="r", criteria=CRITERIA, routes=list(reversed(ROUTES)))
    save_rubric(rubric=rubric)
    assert rubric.versions.get().snapshot["routes"] == ROUTES
    rubric.criteria = []
    with pytest.raises(ValidationError):
        save_rubric(rubric=rubric)
    assert rubric.versions.count() == 1
    assert Rubric.objects.get().criteria == CRITERIA
    with pytest.raises(ValidationError) as raised:
        save_rubric(rubric=Rubric(name="not a slug", criteria=CRITERIA, routes=ROUTES))
    assert "name" in raised.value.message_dict


# Versions and audit ---------------------------------------------------------------


def test_every_save_is_a_new_frozen_version(rubric):
    rubric.routes = [{"min": 60, "route": "outreach"}, *ROUTES[1:]]
    second = save_rubric(rubric=rubric, by="ana")
    third = save_rubric(rubric=rubric, by="ben")
    assert list(rubric.versions.order_by("number").values_list("number", "created_by")) == [
        (1, "ana"),
        (2, "ana"),
        (3, "ben"),
    ]
    assert rubric.version == 3 and third.number == 3
    assert rubric.versions.get(number=1).snapshot["routes"][0]["min"] == 70
    assert second.snapshot["routes"][0]["min"] == 60
    with pytest.raises(ValueError, match="immutable"):
        second.save()


def test_a_save_is_audited_with_the_version_and_what_changed(rubric):
    first = AuditEntry.objects.get(action="rubric.saved")
    assert (first.actor, first.target_type, first.target_id) == (
        "user:ana",
        "policies.rubric",
        str(rubric.pk),
    )
    assert first.data["version"] == 1
    rubric.routes = [{"min": 60, "route": "outreach"}, *ROUTES[1:]]
    save_rubric(rubric=rubric, by="ben", actor="user:ben")
    second = AuditEntry.objects.filter(action="rubric.saved").order_by("-id").first()
    assert second.data["version"] == 2 and second.actor == "user:ben"
    old, new = second.data["changed"]["routes"]
    assert (old[0]["min"], new[0]["min"]) == (70, 60)
    assert "criteria" not in second.data["changed"]
    assert RubricVersion.objects.count() == 2


# Totals and routes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "route"),
    [
        (100, "outreach"),
        (70, "outreach"),
        (69.99, "nurture"),
        (40, "nurture"),
        (39.99, "archive"),
        (0, "archive"),
    ],
)
def test_routes_at_the_thresholds(total, route):
    assert route_of(total) == route


def test_the_total_is_the_weighted_mean_and_float_noise_never_crosses_a_threshold():
    snapshot = {"criteria": CRITERIA, "routes": ROUTES}
    assert total_for(snapshot, {"fit": 80, "intent": 60}) == 75.0
    assert total_for(snapshot, {"fit": 80}) == 60.0  # a missing criterion counts 0
    assert total_for(snapshot, {"fit": 120, "intent": -5}) == 75.0  # clamped to 0-100
    noisy = {
        "criteria": [
            {"key": "a", "description": "a", "weight": 0.1},
            {"key": "b", "description": "b", "weight": 0.2},
            {"key": "c", "description": "c", "weight": 0.4},
        ],
        "routes": ROUTES,
    }
    # 0.1, 0.2, 0.4 at 40 each is 39.99999999999999 in floating point.
    assert total_for(noisy, {"a": 40, "b": 40, "c": 40}) == 40.0
    assert route_for(noisy, total_for(noisy, {"a": 40, "b": 40, "c": 40})) == "nurture"
    assert route_for(noisy, total_for(noisy, {"a": 70, "b": 69.99, "c": 70})) == "nurture"


# Re-score preview -------------------------------------------------------------------


def test_the_preview_counts_exactly_the_scores_a_lower_threshold_moves(rubric, make_workflow):
    record_scores(rubric, make_workflow)
    draft = [{"min": 60, "route": "outreach"}, *ROUTES[1:]]
    preview = rescore_preview(rubric=rubric, criteria=CRITERIA, routes=draft)
    assert (preview.scanned, preview.moved, preview.unchanged) == (10, 4, 6)
    assert [(m.from_route, m.to_route, m.count) for m in preview.moves] == [
        ("nurture", "outreach", 4)
    ]
    assert preview.matrix == {
        "outreach": {"outreach": 2},
        "nurture": {"outreach": 4, "nurture": 2},
        "archive": {"archive": 2},
    }
    assert [(old, [count for _new, count in cells]) for old, cells in preview.rows()] == [
        ("outreach", [2, 0, 0]),
        ("nurture", [4, 2, 0]),
        ("archive", [0, 0, 2]),
    ]
    examples = preview.moves[0].examples
    # Newest first, at most three per move.
    assert [(e.old_total, e.new_total, e.new_route) for e in examples] == [
        (61, 61.0, "outreach"),
        (62, 62.0, "outreach"),
        (65, 65.0, "outreach"),
    ]
    assert examples[0].subject == "Lead 5 (61)" and examples[0].run_id
    # Nothing was saved.
    assert rubric.versions.count() == 1 and Rubric.objects.get().routes == ROUTES


def test_the_preview_reweights_recorded_criteria_and_reports_missing_ones(rubric, make_workflow):
    record_scores(rubric, make_workflow)
    added = [*CRITERIA, {"key": "budget", "description": "Has budget.", "weight": 4}]
    preview = rescore_preview(rubric=rubric, criteria=added, routes=ROUTES)
    # Every old score lacks budget: each total halves.
    assert preview.missing == {"budget": 10}
    moved = {(m.from_route, m.to_route): m.count for m in preview.moves}
    # 75, 72 -> 37.5, 36 archive; 68..45 -> 34..22.5 archive; 30, 10 stay.
    assert moved == {("outreach", "archive"): 2, ("nurture", "archive"): 6}
    assert preview.unchanged == 2


def test_the_preview_reads_the_newest_scores_only_and_refuses_a_bad_draft(rubric, make_workflow):
    record_scores(rubric, make_workflow)
    draft = [{"min": 60, "route": "outreach"}, *ROUTES[1:]]
    preview = rescore_preview(rubric=rubric, criteria=CRITERIA, routes=draft, limit=5)
    # The five newest are 61, 55, 45, 30, 10: one moves.
    assert (preview.scanned, preview.moved) == (5, 1)
    with pytest.raises(ValidationError) as raised:
        rescore_preview(rubric=rubric, criteria=CRITERIA, routes=ROUTES[:2])
    assert "routes" in raised.value.message_dict
    other = Rubric(name="other", criteria=CRITERIA, routes=ROUTES)
    save_rubric(rubric=other)
    assert rescore_preview(rubric=other, criteria=CRITERIA, routes=draft).scanned == 0


# Admin ---------------------------------------------------------------------------


class _FormFields(HTMLParser):
    """The fields a browser would submit from the page's change form."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        name = attrs.get("name")
        if tag == "input" and name and attrs.get("type") not in ("submit", "button"):
            if attrs.get("type") == "checkbox" and "checked" not in attrs:
                return
            self.fields[name] = attrs.get("value") or (
                "on" if attrs.get("type") == "checkbox" else ""
            )
        elif tag == "textarea" and name:
            self._textarea = name
            self.fields[name] = ""

    def handle_data(self, data) -> None:
        if self._textarea:
            self.fields[self._textarea] += data

    def handle_endtag(self, tag) -> None:
        if tag == "textarea":
            self._textarea = None


def form_of(response) -> dict[str, str]:
    parser = _FormFields()
    parser.feed(response.content.decode())
    parser.fields.pop("csrfmiddlewaretoken", None)
    return parser.fields


def change_url(rubric: Rubric) -> str:
    return f"/admin/policies/rubric/{rubric.pk}/change/"


def test_a_manager_previews_a_lower_threshold_then_saves_it(
    client, make_user, rubric, make_workflow
):
    record_scores(rubric, make_workflow)
    manager = make_user("manager")
    client.force_login(manager)
    page = client.get(change_url(rubric))
    assert page.status_code == 200
    assert b'id="rubric-preview-button"' in page.content
    data = form_of(page)
    assert (data["routes-0-min"], data["routes-0-route"]) == ("70", "outreach")
    assert data["criteria-1-key"] == "intent"
    data["routes-0-min"] = "60"

    preview = client.post(change_url(rubric), {**data, "_preview": "Preview re-score"})
    assert preview.status_code == 200
    shown = preview.context["adminform"].form.preview
    assert (shown.scanned, shown.moved, shown.unchanged) == (10, 4, 6)
    html = preview.content.decode()
    assert 'id="rubric-preview-moved">4<' in html and "nurture → outreach: 4" in html
    assert form_of(preview)["routes-0-min"] == "60"  # the draft stays on the page
    assert rubric.versions.count() == 1 and Rubric.objects.get().routes == ROUTES

    saved = client.post(change_url(rubric), {**data, "_save": "Save"})
    assert saved.status_code == 302
    latest = rubric.versions.order_by("-number").first()
    assert latest.number == 2 and latest.created_by == manager.username
    assert latest.snapshot["routes"][0] == {"min": 60, "route": "outreach"}
    assert latest.snapshot["criteria"] == CRITERIA  # weights kept as typed (3, not 3.0)
    entry = AuditEntry.objects.filter(action="rubric.saved").order_by("-id").first()
    assert entry.actor == f"user:{manager.username}" and entry.data["version"] == 2


def test_the_admin_refuses_a_bad_draft_and_names_the_problem(client, make_user, rubric):
    client.force_login(make_user("manager"))
    data = form_of(client.get(change_url(rubric)))
    data["routes-2-DELETE"] = "on"  # drop the 0 route
    data["criteria-0-weight"] = "0"
    for button in ("_save", "_preview"):
        page = client.post(change_url(rubric), {**data, button: "go"})
        assert page.status_code == 200
        html = page.content.decode()
        assert "Routes: the last route&#x27;s min must be 0" in html, button
        assert "Ensure this value is greater than or equal to" in html
    assert rubric.versions.count() == 1


def test_a_manager_adds_a_rubric_from_the_tables(client, make_user):
    client.force_login(make_user("manager"))
    data = form_of(client.get("/admin/policies/rubric/add/"))
    data.update(
        {
            "name": "churn-risk",
            "criteria-0-key": "usage_drop",
            "criteria-0-description": "Weekly active use fell.",
            "criteria-0-weight": "2.5",
            "routes-0-min": "0",
            "routes-0-route": "watch",
            "routes-1-min": "50",
            "routes-1-route": "call",
        }
    )
    assert client.post("/admin/policies/rubric/add/", {**data, "_save": "Save"}).status_code == 302
    rubric = Rubric.objects.get(name="churn-risk")
    assert rubric.criteria == [
        {"key": "usage_drop", "description": "Weekly active use fell.", "weight": 2.5}
    ]
    assert rubric.routes == [{"min": 50, "route": "call"}, {"min": 0, "route": "watch"}]
    assert rubric.versions.get().number == 1


@pytest.mark.parametrize("role", ["reviewer", "viewer"])
def test_reviewers_and_viewers_see_a_rubric_but_cannot_change_it(client, make_user, rubric, role):
    manager_page = None
    client.force_login(make_user("manager"))
    manager_page = form_of(client.get(change_url(rubric)))
    client.force_login(make_user(role))
    page = client.get(change_url(rubric))
    assert page.status_code == 200
    html = page.content.decode()
    assert "outreach" in html and "Company size and industry" in html
    assert 'name="routes-0-min"' not in html and "rubric-preview-button" not in html
    for button in ("_save", "_preview"):
        refused = client.post(change_url(rubric), {**manager_page, button: "go"})
        assert refused.status_code == 403
    assert client.get("/admin/policies/rubric/add/").status_code == 403
    assert rubric.versions.count() == 1


def test_the_rubric_list_costs_the_same_queries_for_more_rubrics(client, make_user):
    client.force_login(make_user("manager"))

    def queries_for(count: int) -> int:
        for index in range(Rubric.objects.count(), count):
            save_rubric(rubric=Rubric(name=f"r{index}", criteria=CRITERIA, routes=ROUTES))
        with CaptureQueriesContext(connection) as captured:
            page = client.get("/admin/policies/rubric/")
        assert page.status_code == 200 and page.content.count(b"outreach \xe2\x89\xa5 70") == count
        return len(captured)

    assert queries_for(2) == queries_for(6)
