"""The evaluation API and the experiment pages."""

from __future__ import annotations

import pytest

from evals.models import Experiment, ShadowRollout
from runs import engine
from tests.api.conftest import client_for, post
from tests.evals.conftest import finish, set_subject

pytestmark = pytest.mark.django_db


@pytest.fixture
def make_key(db):
    from integrations.apikeys import create_apikey
    from policies.models import ApiScope

    def make(scopes=tuple(ApiScope.values)) -> str:
        return create_apikey(name="evals", scopes=scopes, workflows=())[1]

    return make


@pytest.fixture
def api(make_key):
    return client_for(make_key())


def test_an_experiment_is_started_and_its_verdicts_read(api, outreach, eval_set):
    set_subject(outreach.workflow, "Hi {{ input.company }}")
    body = {
        "workflow": outreach.workflow.slug,
        "eval_set": "outreach",
        "versions": [1],
        "draft": True,
    }
    started = post(api, "/api/v1/experiments", body)
    assert started.status_code == 201, started.content
    data = started.json()
    assert [(arm["version"], arm["candidate"], arm["pending"]) for arm in data["arms"]] == [
        (1, False, 5),
        (0, True, 5),
    ]
    finish(Experiment.objects.get(pk=data["id"]))
    read = api.get(f"/api/v1/experiments/{data['id']}").json()
    assert read["status"] == "done"
    live, draft = read["arms"]
    assert (live["passed"], draft["passed"], draft["failed"]) == (5, 2, 3)
    acme = next(t for t in draft["trials"] if t["case"] == "Acme greeting")
    assert acme["verdict"] == "failed" and acme["critical"]


def test_an_unknown_eval_set_or_version_is_404(api, outreach, eval_set):
    body = {"workflow": outreach.workflow.slug, "eval_set": "nope", "versions": [1]}
    assert post(api, "/api/v1/experiments", body).json()["code"] == "not_found"
    body = {"workflow": outreach.workflow.slug, "eval_set": "outreach", "versions": [9]}
    assert post(api, "/api/v1/experiments", body).status_code == 404


def test_a_key_without_the_write_scope_starts_nothing(make_key, outreach, eval_set):
    reader = client_for(make_key(scopes=["runs:read"]))
    body = {"workflow": outreach.workflow.slug, "eval_set": "outreach", "versions": [1]}
    assert post(reader, "/api/v1/experiments", body).status_code == 403
    assert not Experiment.objects.exists()


def test_a_shadow_is_started_and_stopped(api, outreach):
    set_subject(outreach.workflow, "Hi {{ input.company }}")
    started = post(api, "/api/v1/shadows", {"workflow": outreach.workflow.slug})
    assert started.status_code == 201
    assert started.json()["candidate"] and started.json()["active"]
    again = post(api, "/api/v1/shadows", {"workflow": outreach.workflow.slug, "version": 1})
    assert again.status_code == 409
    stopped = post(api, f"/api/v1/shadows/{started.json()['id']}/stop")
    assert stopped.status_code == 200 and not stopped.json()["active"]
    assert not ShadowRollout.objects.filter(active=True).exists()


def test_the_experiment_page_compares_versions_with_and_without_htmx(
    admin_client, outreach, eval_set
):
    from evals.experiments import start_experiment

    set_subject(outreach.workflow, "Hi {{ input.company }}")
    experiment = start_experiment(eval_set=eval_set, versions=[outreach], draft=True)
    running = admin_client.get(f"/console/experiments/{experiment.pk}/")
    assert b'hx-trigger="every 3s"' in running.content
    finish(experiment)
    page = admin_client.get(f"/console/experiments/{experiment.pk}/")
    assert page.status_code == 200
    assert b"Cases that changed verdict (3)" in page.content
    assert b"+Hi Acme" in page.content
    partial = admin_client.get(
        f"/console/experiments/{experiment.pk}/", headers={"HX-Request": "true"}
    )
    assert partial.content.startswith(b'<section id="report"')
    assert b"every 3s" not in partial.content  # over: no more polling
    assert b"<html" not in partial.content
    assert admin_client.get("/console/experiments/").status_code == 200


def test_an_experiment_is_cancelled_and_resumed_from_its_page(admin_client, outreach, eval_set):
    from evals.experiments import start_experiment

    experiment = start_experiment(eval_set=eval_set, versions=[outreach])
    admin_client.post(f"/console/experiments/{experiment.pk}/cancel/")
    assert Experiment.objects.get().status == "cancelled"
    admin_client.post(f"/console/experiments/{experiment.pk}/resume/")
    assert Experiment.objects.get().status == "running"


def test_the_pages_need_their_permission(client, django_user_model, outreach, eval_set):
    user = django_user_model.objects.create_user("nobody", password="x")
    client.force_login(user)
    assert client.get("/console/experiments/").status_code == 403
    assert client.get("/console/shadows/").status_code == 403


def test_a_sandbox_run_page_says_it_is_one(admin_client, outreach, eval_set):
    from evals.experiments import start_experiment
    from evals.models import Trial

    start_experiment(eval_set=eval_set, versions=[outreach])
    run_id = Trial.objects.values_list("run_id", flat=True).first()
    assert b"Experiment (sandbox)" in admin_client.get(f"/console/runs/{run_id}/").content


def test_the_experiment_page_takes_the_same_queries_for_5_cases_as_for_10(
    admin_client, outreach, eval_set, django_assert_num_queries, django_assert_max_num_queries
):
    from evals.experiments import start_experiment
    from evals.models import EvalCase, EvalSet

    set_subject(outreach.workflow, "Hi {{ input.company }}")
    v2 = engine.publish_workflow(workflow=outreach.workflow)  # flips three cases of five
    small = finish(start_experiment(eval_set=eval_set, versions=[outreach, v2]))
    admin_client.get(f"/console/experiments/{small.pk}/")  # the session is warm
    with django_assert_max_num_queries(100) as five:
        admin_client.get(f"/console/experiments/{small.pk}/")
    bigger = EvalSet.objects.create(workflow=outreach.workflow, name="bigger")
    for case in eval_set.cases.all():
        for copy in range(2):
            EvalCase.objects.create(
                eval_set=bigger,
                name=f"{case.name} {copy}",
                input=case.input,
                expectations=case.expectations,
            )
    large = finish(start_experiment(eval_set=bigger, versions=[outreach, v2]))
    with django_assert_num_queries(len(five)):
        page = admin_client.get(f"/console/experiments/{large.pk}/")
    assert b"Cases that changed verdict (6)" in page.content


def test_the_shadow_list_takes_the_same_queries_for_1_rollout_as_for_4(
    admin_client, outreach, django_assert_max_num_queries, django_assert_num_queries
):
    def add() -> None:
        ShadowRollout.objects.create(workflow=outreach.workflow, candidate=outreach, active=False)

    add()
    with django_assert_max_num_queries(50) as one:
        assert admin_client.get("/console/shadows/").status_code == 200
    for _ in range(3):
        add()
    with django_assert_num_queries(len(one)):
        page = admin_client.get("/console/shadows/")
    assert page.content.decode().count("/console/shadows/") >= 4
