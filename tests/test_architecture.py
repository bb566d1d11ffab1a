"""Rules about the shape of the code that a review could miss."""

from __future__ import annotations

import ast
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_ENGINE = (
    "ninja",
    "django_q",
    "anthropic",
    "django.contrib.admin",
    "django.shortcuts",
    "django.template",
    "django.views",
)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_engine_imports_no_views_api_queue_admin_or_sdk():
    offenders = []
    for path in sorted((ROOT / "runs" / "engine").rglob("*.py")):
        for module in imported_modules(path):
            bad = [f for f in FORBIDDEN_IN_ENGINE if module == f or module.startswith(f + ".")]
            bad += [module] if module.endswith((".views", ".api", ".admin", ".tasks")) else []
            offenders += [f"{path.relative_to(ROOT)} imports {module}" for _ in bad]
    assert offenders == []


def test_the_rule_catches_an_offender(tmp_path):
    offender = tmp_path / "x.py"
    offender.write_text("from django_q.tasks import async_task\nimport runs.views\n")
    assert {"django_q.tasks", "runs.views"} <= imported_modules(offender)


def test_queue_retry_exceeds_the_task_timeout():
    # Otherwise a slow task is delivered again while it still runs.
    assert settings.Q_CLUSTER["retry"] > settings.Q_CLUSTER["timeout"]
    # And a task's slice of a run ends well before the queue would kill it.
    assert settings.Q_CLUSTER["timeout"] > settings.BOSUN_TASK_SLICE_S


def test_connections_persist_for_the_queue_poller():
    assert settings.DATABASES["default"]["CONN_MAX_AGE"] > 0
    assert settings.DATABASES["default"]["CONN_HEALTH_CHECKS"] is True


def test_plugins_are_listed_by_dotted_path():
    from django.utils.module_loading import import_string

    from runs.tools.base import registry

    for path in [*registry().values(), *settings.BOSUN_LLM_PROVIDERS.values()]:
        assert import_string(path)


def test_the_sample_vendors_are_tools_only_while_the_demo_app_is_installed(settings):
    from runs.tools.base import tool_names

    assert "enrich.company" in tool_names()
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "demo"]
    assert "enrich.company" not in tool_names()
    assert "echo" in tool_names()


def test_a_queue_schedule_sweeps_as_a_safety_net(db):
    from django_q.models import Schedule

    schedule = Schedule.objects.get(name="bosun-sweeper")
    assert schedule.func == "runs.tasks.sweep" and schedule.minutes == 1
