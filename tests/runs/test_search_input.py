"""The search's copy of a run's input (`RunInput`): the database writes it
for every run, however the run is inserted, and the search indexes live on
it instead of on the run table that every claim and run's end rewrites."""

from __future__ import annotations

import pytest
from django.db import connection

from runs import search
from runs.models import Run, RunInput
from tests.console import runs_fixtures as fx

pytestmark = pytest.mark.django_db

two_step_version = fx.two_step_version


def copies() -> dict[int, dict]:
    return dict(RunInput.objects.values_list("run_id", "input"))


def new_run(version, **input_values) -> Run:
    return Run(workflow_id=version.workflow_id, version=version, input=dict(input_values))


def test_every_inserted_run_gets_its_input_copied_whatever_inserts_it(two_step_version):
    one = Run.objects.create(
        workflow_id=two_step_version.workflow_id, version=two_step_version, input={"a": 1}
    )
    loaded = Run.objects.bulk_create(
        [new_run(two_step_version, email=f"p{i}@acme.com") for i in range(3)]
    )
    ids = [one.pk, *(run.pk for run in loaded)]
    assert all(ids)
    assert copies() == {
        one.pk: {"a": 1},
        **{run.pk: {"email": f"p{i}@acme.com"} for i, run in enumerate(loaded)},
    }


def test_a_changed_input_changes_its_copy_and_a_deleted_run_takes_its_copy(two_step_version):
    kept, changed, saved = Run.objects.bulk_create(
        [new_run(two_step_version, n=n) for n in range(3)]
    )
    Run.objects.filter(pk=changed.pk).update(input={"n": 10})
    saved.input = {"n": 20}
    saved.save()
    assert copies() == {kept.pk: {"n": 0}, changed.pk: {"n": 10}, saved.pk: {"n": 20}}

    # A write of other columns leaves the copy as it is.
    Run.objects.filter(pk=kept.pk).update(status="running", steps_executed=3)
    assert copies()[kept.pk] == {"n": 0}

    Run.objects.filter(pk=changed.pk).delete()
    kept.delete()
    assert copies() == {saved.pk: {"n": 20}}


def test_the_search_finds_runs_loaded_in_bulk_by_value_domain_and_field(two_step_version):
    by_value, by_address, by_field, other = Run.objects.bulk_create(
        [
            new_run(two_step_version, company="acme.com"),
            new_run(two_step_version, email="Bob@www.Acme.com"),
            new_run(two_step_version, deal={"stage": "won"}),
            new_run(two_step_version, company="globex.com"),
        ]
    )
    match = search.EntityMatch(text="acme.com", values={"acme.com"}, domains={"acme.com"})
    found = search.newest_ids(Run.objects.all(), match.conditions(), limit=10)
    assert set(found) == {by_value.pk, by_address.pk}

    condition = search.field_condition("deal.stage", "won", vendor=connection.vendor)
    assert list(Run.objects.filter(condition).values_list("pk", flat=True)) == [by_field.pk]
    assert other.pk not in found


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's indexes")
def test_no_index_on_the_run_table_reads_the_input_and_the_copy_has_the_search_indexes(db):
    def indexes(table: str) -> dict[str, str]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [table]
            )
            return dict(cursor.fetchall())

    on_runs = {name: sql for name, sql in indexes("runs_run").items() if "input" in sql}
    assert on_runs == {}
    copies = indexes("runs_runinput")
    assert "USING gin (input)" in copies["runinput_gin"]
    assert "bosun_json_domains(input)" in copies["runinput_domains"]
