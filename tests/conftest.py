"""Shared fixtures: workflows built from plain dicts, and a run driver."""

from __future__ import annotations

import importlib
import itertools
import pkgutil
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connections

from policies.models import AgentRole, Policy
from policies.services import rules_for, save_policy, save_role
from runs import engine
from runs.engine.definition import _cache as definition_cache
from runs.models import Run, Step, Workflow, WorkflowVersion
from runs.tools.base import tool_names
from tests.testapp import bell

_slugs = itertools.count(1)

STEP_DEFAULTS = {
    "max_attempts": 3,
    "backoff_base_s": 0.01,
    "backoff_cap_s": 0.05,
    "timeout_s": 10.0,
    "max_visits": 1,
}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Tests marked postgres_only are skipped on SQLite, with the reason.

    And the order is Django's once more: tests in a rolled-back transaction
    first, then transactional ones (whose flush empties what migrations
    wrote: role groups, the global switch, schedules), then the rest.
    pytest-django sorts so, but pytest's own grouping of session-scoped
    parameters (the browser) runs after it and pulls browser tests forward.
    """
    import django.conf

    items.sort(key=_django_order)

    if "sqlite" in django.conf.settings.DATABASES["default"]["ENGINE"]:
        skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL)")
        for item in items:
            if "postgres_only" in item.keywords:
                item.add_marker(skip)


def _django_order(item) -> int:
    marker = item.get_closest_marker("django_db")
    names = getattr(item, "fixturenames", ())
    if (marker and marker.kwargs.get("transaction")) or {"live_server", "transactional_db"} & set(
        names
    ):
        return 1
    return 0 if marker or "db" in names else 2


@pytest.fixture(autouse=True)
def _migration_data(request):
    """A transactional test starts from what `migrate` leaves: the flush
    after the one before it emptied every table, and post_migrate brings
    back only content types and permissions."""
    if _django_order(request.node) == 1:
        request.getfixturevalue("transactional_db")
        restore_migration_data()


def restore_migration_data() -> None:
    """Write again what the data migrations wrote: the role groups with
    their grants, the global kill switch row, the sweeper and roll-up
    schedules, the review's reason codes."""
    from django.apps import apps
    from django.contrib.auth.models import Group, Permission

    import approvals.migrations
    import evals.migrations
    import policies.migrations
    import runs.migrations

    grants: dict[str, set[str]] = {}
    for package in (policies.migrations, approvals.migrations, runs.migrations, evals.migrations):
        for module in pkgutil.iter_modules(package.__path__):
            migration = importlib.import_module(f"{package.__name__}.{module.name}")
            for table in (getattr(migration, "ROLES", {}), getattr(migration, "GRANTS", {})):
                for role, codes in table.items():
                    grants.setdefault(role, set()).update(codes)
    # A grant names the app a model had then; a model that moved since
    # (webhooks to integrations, the sample vendors' calls to demo) is
    # found under its app of today, as the migrations leave it.
    label_now = {model._meta.model_name: model._meta.app_label for model in apps.get_models()}
    for role, codes in grants.items():
        group, _ = Group.objects.get_or_create(name=role)
        for code in codes:
            app_label, codename = code.split(".")
            app_label = label_now.get(codename.split("_", 1)[1], app_label)
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
    importlib.import_module("policies.migrations.0004_global_switch").create_global_switch(
        apps, None
    )
    importlib.import_module("runs.migrations.0002_sweeper_schedule").add_schedule(apps, None)
    importlib.import_module("approvals.migrations.0004_review_flow").seed_reason_codes(apps, None)
    importlib.import_module("runs.migrations.0021_daily_rollup").add_schedule(apps, None)
    importlib.import_module("evals.migrations.0003_refresh_schedule").add_schedule(apps, None)


@pytest.fixture(autouse=True)
def _fresh_bell_and_cache():
    bell.rung.clear()
    definition_cache.clear()
    rules_for.cache_clear()  # version ids are reused across test databases
    yield


@pytest.fixture
def rung() -> list[int]:
    return bell.rung


def chain(*steps: dict[str, Any]) -> list[dict[str, Any]]:
    """Steps that follow each other in order through their `next` edge."""
    out = []
    for index, step in enumerate(steps):
        step = dict(step)
        if step["kind"] != "end" and "edges" not in step and index + 1 < len(steps):
            step["edges"] = {"next": steps[index + 1]["key"]}
        out.append(step)
    return out


@pytest.fixture
def make_workflow(db):
    """Build (and publish) a workflow from plain dicts.

    Runs act as a role allowing exactly the tools the steps name, unless
    `tools` lists others; `policy` (a dict of Policy fields) binds a policy;
    other keywords are Workflow fields (input_schema, max_active_runs, ...).
    """

    def make(
        steps: list[dict[str, Any]],
        *,
        entry: str | None = None,
        publish: bool = True,
        slug: str | None = None,
        tools: list[str] | None = None,
        policy: dict[str, Any] | None = None,
        **workflow_fields: Any,
    ) -> Workflow | WorkflowVersion:
        slug = slug or f"wf-{next(_slugs)}"
        if tools is None:
            named = {s["config"].get("tool") for s in steps if s["kind"] == "tool"}
            tools = sorted(named & set(tool_names()))
        role = AgentRole(name=f"role-{slug}", allowed_tools=tools)
        save_role(role=role, by="test")
        policy_row = None
        if policy is not None:
            policy_row = Policy(name=f"policy-{slug}", **policy)
            save_policy(policy=policy_row, by="test")
        workflow = Workflow.objects.create(
            name="Test workflow",
            slug=slug,
            entry_step=entry or steps[0]["key"],
            role=role,
            policy=policy_row,
            **workflow_fields,
        )
        for position, step in enumerate(steps):
            fields = {
                **STEP_DEFAULTS,
                **{k: v for k, v in step.items() if k not in ("key", "kind", "config", "edges")},
            }
            Step.objects.create(
                workflow=workflow,
                key=step["key"],
                kind=step["kind"],
                position=position,
                config=step.get("config", {}),
                edges=step.get("edges", {}),
                **fields,
            )
        if not publish:
            return workflow
        return engine.publish_workflow(workflow=workflow)

    return make


def drive(run_id: int, *, limit: int = 50) -> Run:
    """Advance a run until nobody can claim it (it waits or it ended)."""
    for _ in range(limit):
        if engine.advance_run(run_id) is engine.Advance.NOT_CLAIMED:
            break
    return Run.objects.get(pk=run_id)


def waiting_for_review(make_workflow) -> int:
    """A run of a one-approval workflow, driven until it waits for review."""
    version = make_workflow(
        [
            {
                "key": "review",
                "kind": "approval",
                "config": {"draft": "text"},
                "edges": {"approved": "done", "rejected": "done"},
            },
            {"key": "done", "kind": "end", "config": {"outcome": "done"}},
        ]
    )
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    drive(run_id)
    return run_id


def race(count: int, work: Callable[[int], object]) -> list[object]:
    """Run `work(i)` in `count` threads released at once, each with its own
    database connection; returns results (or the exceptions raised)."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def body(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except Exception as exc:  # collected and asserted on by the caller
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.fixture
def make_user(db):
    """`make_user(role="reviewer")`: a user in one of the four role groups
    (operator, manager, reviewer, viewer), password "pw"; `role=None` for a
    user in no group, `superuser=True` for an admin."""
    from django.contrib.auth.models import Group, User

    def make(role: str | None = "viewer", *, username: str = "", superuser: bool = False):
        name = username or f"{role or 'nobody'}-{next(_slugs)}"
        if superuser:
            return User.objects.create_superuser(name, f"{name}@example.com", "pw")
        user = User.objects.create_user(name, f"{name}@example.com", "pw", is_staff=True)
        if role:
            user.groups.add(Group.objects.get(name=role))
        return user

    return make
