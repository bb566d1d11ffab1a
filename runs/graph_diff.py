"""What changed between two workflow snapshots: steps added, removed and
changed (kind, config with prompts as a text diff, edges, retry policy),
and the workflow's own fields. Pure Python over the stored definitions."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

WORKFLOW_FIELDS = ("entry", "input_schema", "sensitive_fields", "untrusted_fields")
POLICY_FIELDS = (
    "max_attempts",
    "backoff_base_s",
    "backoff_cap_s",
    "timeout_s",
    "max_visits",
    "cache_ttl_s",
)


@dataclass(frozen=True)
class Change:
    """One changed field: its old and new value as text, and for text that
    spans lines (prompts, long JSON) a unified diff."""

    name: str
    old: str
    new: str
    lines: tuple[tuple[str, str], ...] = ()  # (css class, line) of the unified diff


@dataclass
class StepDiff:
    key: str
    status: str  # added, removed, changed, same
    kind: str
    changes: list[Change] = field(default_factory=list)


@dataclass
class VersionDiff:
    workflow: list[Change]
    steps: list[StepDiff]

    @property
    def changed(self) -> list[StepDiff]:
        return [step for step in self.steps if step.status != "same"]


def diff_definitions(old: dict[str, Any], new: dict[str, Any]) -> VersionDiff:
    """Compare two snapshots (`WorkflowVersion.definition`)."""
    workflow = [
        change
        for name in WORKFLOW_FIELDS
        if (change := _change(name, old.get(name), new.get(name))) is not None
    ]
    old_steps, new_steps = old.get("steps") or {}, new.get("steps") or {}
    keys = list(old_steps) + [key for key in new_steps if key not in old_steps]
    steps = []
    for key in keys:
        before, after = old_steps.get(key), new_steps.get(key)
        if before is None:
            steps.append(StepDiff(key, "added", new_steps[key].get("kind", ""), _all(after or {})))
        elif after is None:
            steps.append(StepDiff(key, "removed", before.get("kind", ""), []))
        else:
            changes = _step_changes(before, after)
            steps.append(
                StepDiff(key, "changed" if changes else "same", after.get("kind", ""), changes)
            )
    return VersionDiff(workflow=workflow, steps=steps)


def _all(step: dict[str, Any]) -> list[Change]:
    return _step_changes({}, step)


def _step_changes(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    changes = []
    if (change := _change("kind", before.get("kind"), after.get("kind"))) is not None:
        changes.append(change)
    old_config, new_config = before.get("config") or {}, after.get("config") or {}
    for name in list(old_config) + [n for n in new_config if n not in old_config]:
        change = _change(f"config.{name}", old_config.get(name), new_config.get(name))
        if change is not None:
            changes.append(change)
    old_edges, new_edges = before.get("edges") or {}, after.get("edges") or {}
    for label in list(old_edges) + [n for n in new_edges if n not in old_edges]:
        change = _change(f"edge {label}", old_edges.get(label), new_edges.get(label))
        if change is not None:
            changes.append(change)
    for name in (*POLICY_FIELDS, "output_checks"):
        if (change := _change(name, before.get(name), after.get(name))) is not None:
            changes.append(change)
    return changes


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _change(name: str, old: Any, new: Any) -> Change | None:
    if old == new:
        return None
    before, after = _text(old), _text(new)
    lines: tuple[tuple[str, str], ...] = ()
    if "\n" in before or "\n" in after or len(before) > 60 or len(after) > 60:
        unified = difflib.unified_diff(
            before.splitlines(), after.splitlines(), "before", "after", lineterm="", n=2
        )
        lines = tuple((_line_class(line), line) for line in unified)
    return Change(name, before, after, lines)


def _line_class(line: str) -> str:
    if line.startswith(("+++", "---", "@@")):
        return "hunk"
    if line.startswith("+"):
        return "add"
    if line.startswith("-"):
        return "del"
    return "same"
