"""Publish validates the draft graph and freezes an immutable version."""

import pytest

from runs import engine
from runs.models import WorkflowVersion
from tests.conftest import chain

END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}


def refused(make_workflow, steps, **kwargs) -> list[str]:
    workflow = make_workflow(steps, publish=False, **kwargs)
    with pytest.raises(engine.PublishError) as caught:
        engine.publish_workflow(workflow=workflow)
    assert not WorkflowVersion.objects.filter(workflow=workflow).exists()
    return caught.value.problems


def test_it_publishes_a_valid_workflow_as_version_1(make_workflow):
    version = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
    assert version.number == 1
    assert set(version.definition["steps"]) == {"a", "done"}


def test_a_published_version_is_immutable(make_workflow):
    version = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
    version.definition = {}
    with pytest.raises(ValueError, match="immutable"):
        version.save()


def test_publishing_again_without_changes_is_refused_and_a_change_makes_v2(make_workflow):
    version = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
    with pytest.raises(engine.PublishError, match="nothing changed since version 1"):
        engine.publish_workflow(workflow=version.workflow)
    version.workflow.steps.filter(key="a").update(config={"tool": "echo", "args": {"value": 1}})
    assert engine.publish_workflow(workflow=version.workflow).number == 2


def test_it_refuses_an_edge_that_lands_nowhere(make_workflow):
    problems = refused(
        make_workflow,
        [{"key": "a", "kind": "tool", "config": {"tool": "echo"}, "edges": {"next": "ghost"}}, END],
    )
    assert "step 'a' (tool): edge 'next' leads to 'ghost', which is not a step" in problems


def test_it_refuses_an_unreachable_step(make_workflow):
    problems = refused(
        make_workflow,
        [
            *chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END),
            {
                "key": "orphan",
                "kind": "tool",
                "config": {"tool": "echo"},
                "edges": {"next": "done"},
            },
        ],
    )
    assert "step 'orphan' is not reachable from the entry step 'a'" in problems


def test_it_refuses_a_config_that_breaks_its_kind(make_workflow):
    problems = refused(
        make_workflow,
        chain(
            {"key": "a", "kind": "tool", "config": {"args": {}}},
            {
                "key": "b",
                "kind": "branch",
                "config": {
                    "rules": [{"when": {"path": "x", "op": "~~", "value": 1}, "edge": "y"}],
                    "default": "y",
                },
            },
            END,
        ),
    )
    assert any(p.startswith("step 'a' (tool): config.tool: Field required") for p in problems)
    assert any(p.startswith("step 'b' (branch): config.rules.0.when") for p in problems)


def test_it_refuses_an_unknown_tool_and_an_unknown_kind(make_workflow):
    problems = refused(
        make_workflow,
        chain(
            {"key": "a", "kind": "tool", "config": {"tool": "no.such.tool"}},
            {"key": "b", "kind": "teleport"},
            END,
        ),
    )
    assert "step 'a' (tool): no tool named 'no.such.tool' is registered" in problems
    assert "step 'b': unknown kind 'teleport'" in problems


def test_it_refuses_missing_and_foreign_edges(make_workflow):
    problems = refused(
        make_workflow,
        [{"key": "a", "kind": "approval", "edges": {"approved": "done", "maybe": "done"}}, END],
    )
    assert "step 'a' (approval): edge 'rejected' is missing" in problems
    assert "step 'a' (approval): edge 'maybe' is not an outcome of a approval step" in problems


def test_it_refuses_a_step_that_can_never_finish(make_workflow):
    problems = refused(
        make_workflow,
        [
            {
                "key": "a",
                "kind": "branch",
                "edges": {"out": "done", "spin": "b"},
                "config": {
                    "rules": [{"when": {"path": "input.x", "op": "exists"}, "edge": "out"}],
                    "default": "spin",
                },
            },
            {
                "key": "b",
                "kind": "tool",
                "config": {"tool": "echo"},
                "edges": {"next": "b"},
                "max_visits": 3,
            },
            END,
        ],
    )
    assert "step 'b' can never reach an end step" in problems


def test_it_refuses_an_unbounded_loop_and_accepts_a_bounded_one(make_workflow):
    loop = [
        {"key": "a", "kind": "tool", "config": {"tool": "echo"}, "edges": {"next": "check"}},
        {
            "key": "check",
            "kind": "branch",
            "edges": {"again": "a", "stop": "done"},
            "config": {
                "rules": [
                    {"when": {"path": "input.more", "op": "==", "value": True}, "edge": "again"}
                ],
                "default": "stop",
            },
        },
        END,
    ]
    problems = refused(make_workflow, loop)
    assert any("steps a -> check form a loop with no bound" in p for p in problems)
    loop[0] = {**loop[0], "max_visits": 3}
    assert make_workflow(loop).number == 1


def test_it_refuses_a_missing_entry_step_and_bad_numbers(make_workflow):
    problems = refused(make_workflow, [{**END, "max_attempts": 0}], entry="start")
    assert "the entry step 'start' is not a step of this workflow" in problems
    assert "step 'done' (end): max_attempts must be at least 1" in problems


def test_it_refuses_a_template_with_a_syntax_error(make_workflow):
    problems = refused(
        make_workflow,
        chain({"key": "a", "kind": "llm", "config": {"prompt": "Hello {{ input.name "}}, END),
    )
    assert any(p.startswith("step 'a' (llm): template 'Hello {{ input.name '") for p in problems)


def test_it_refuses_an_invalid_output_schema(make_workflow):
    problems = refused(
        make_workflow,
        chain(
            {"key": "a", "kind": "llm", "config": {"prompt": "x", "output_schema": {"type": 5}}},
            END,
        ),
    )
    assert any("output_schema is not a valid JSON Schema" in p for p in problems)
