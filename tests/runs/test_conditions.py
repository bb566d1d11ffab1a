import pytest
from pydantic import TypeAdapter, ValidationError

from lib.conditions import Condition, evaluate
from lib.context import RenderError, render_value

conditions = TypeAdapter(Condition)
CONTEXT = {
    "input": {"company": "Acme", "tags": ["b2b", "eu"]},
    "steps": {"score": {"total": 72, "nothing": None}},
}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"path": "steps.score.total", "op": ">=", "value": 70}, True),
        ({"path": "steps.score.total", "op": "<", "value": 70}, False),
        ({"path": "input.company", "op": "==", "value": "Acme"}, True),
        ({"path": "input.company", "op": "in", "value": ["Acme", "Globex"]}, True),
        ({"path": "input.tags", "op": "contains", "value": "eu"}, True),
        ({"path": "input.missing", "op": "exists"}, False),
        ({"path": "input.missing", "op": "not_exists"}, True),
        ({"path": "input.missing", "op": "==", "value": None}, False),
        ({"path": "steps.score.nothing", "op": ">", "value": 1}, False),
        (
            {
                "all": [
                    {"path": "steps.score.total", "op": ">", "value": 1},
                    {"path": "input.company", "op": "!=", "value": "x"},
                ]
            },
            True,
        ),
        (
            {
                "any": [
                    {"path": "steps.score.total", "op": ">", "value": 100},
                    {"path": "input.tags.0", "op": "==", "value": "b2b"},
                ]
            },
            True,
        ),
        ({"not": {"path": "steps.score.total", "op": ">", "value": 1}}, False),
    ],
)
def test_it_evaluates_structured_conditions(condition, expected):
    assert evaluate(conditions.validate_python(condition), CONTEXT) is expected


@pytest.mark.parametrize(
    "bad",
    [
        {"path": "steps.score.total", "op": "__import__", "value": 1},
        {"path": "__import__('os').system('x')", "op": "==", "value": 1},
        {"path": "a.b", "op": "==", "value": 1, "code": "print(1)"},
        {"all": []},
    ],
)
def test_it_refuses_anything_but_the_fixed_grammar(bad):
    with pytest.raises(ValidationError):
        conditions.validate_python(bad)


def test_a_whole_expression_keeps_its_native_type():
    assert render_value("{{ steps.score.total }}", CONTEXT) == 72
    assert render_value("Hi {{ input.company }}", CONTEXT) == "Hi Acme"
    assert render_value({"$ref": "input.tags"}, CONTEXT) == ["b2b", "eu"]


def test_an_undefined_variable_is_an_error_not_an_empty_string():
    with pytest.raises(RenderError, match="missing"):
        render_value("Hi {{ input.missing }}", CONTEXT)
    with pytest.raises(RenderError):
        render_value({"$ref": "steps.nope"}, CONTEXT)


def test_templates_run_in_a_sandbox():
    with pytest.raises(RenderError):
        render_value("{{ input.__class__.__mro__[1].__subclasses__() }}", CONTEXT)
