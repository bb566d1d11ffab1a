"""A workflow keeps its slug: its kill switch, API clients and published
versions name it by it, so the database refuses any change of it."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from runs.models import Workflow

pytestmark = pytest.mark.django_db


def test_the_database_refuses_to_change_a_workflows_slug_however_it_is_asked(make_workflow):
    workflow = make_workflow([{"key": "done", "kind": "end", "config": {}}], slug="acme").workflow
    with pytest.raises(IntegrityError, match="keeps its slug"), transaction.atomic():
        Workflow.objects.filter(pk=workflow.pk).update(slug="renamed")
    workflow.slug = "renamed"
    with pytest.raises(IntegrityError, match="keeps its slug"), transaction.atomic():
        workflow.save()
    assert Workflow.objects.get(pk=workflow.pk).slug == "acme"


def test_every_other_field_of_a_workflow_still_changes(make_workflow):
    workflow = make_workflow([{"key": "done", "kind": "end", "config": {}}], slug="acme").workflow
    workflow.refresh_from_db()
    workflow.name, workflow.description = "Acme leads", "renamed for people"
    workflow.save()  # every column is in the UPDATE, the slug unchanged
    assert Workflow.objects.get(pk=workflow.pk).name == "Acme leads"
