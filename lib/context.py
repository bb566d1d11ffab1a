"""The run context and the templates rendered from it.

The context a step sees is `{"input": …, "steps": {step_key: output}, "run":
{"id": …}}`. Templates are Jinja2 in a sandbox with StrictUndefined: an
undefined variable is an error, never an empty string.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, UndefinedError
from jinja2.environment import TemplateExpression
from jinja2.sandbox import SandboxedEnvironment

MISSING = object()

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_WHOLE_EXPRESSION = re.compile(r"^\{\{\s*([^{}]+?)\s*\}\}$")


class RenderError(Exception):
    """A template referenced something the context does not have."""


def resolve(context: Any, path: str) -> Any:
    """Follow a dotted path through dicts and lists; MISSING if absent."""
    node = context
    for part in path.split("."):
        if isinstance(node, dict):
            if part not in node:
                return MISSING
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
    return node


def render_value(value: Any, context: dict[str, Any]) -> Any:
    """Render every template string inside `value`.

    A string that is one `{{ expression }}` and nothing else keeps the
    expression's native type (a number stays a number); `{"$ref": "a.b"}`
    is replaced by the value at that path.
    """
    if isinstance(value, str):
        return _render_string(value, context)
    if isinstance(value, dict):
        if set(value) == {"$ref"}:
            found = resolve(context, value["$ref"])
            if found is MISSING:
                raise RenderError(f"{value['$ref']!r} is not in the run context")
            return found
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    return value


# Templates come from published (immutable) step configs, so a compiled
# template can be kept: compiling is most of a render's cost.
@lru_cache(maxsize=2048)
def _template(text: str) -> Template:
    return _env.from_string(text)


@lru_cache(maxsize=2048)
def _expression(source: str) -> TemplateExpression:
    return _env.compile_expression(source, undefined_to_none=False)


def _render_string(text: str, context: dict[str, Any]) -> Any:
    if "{" not in text:
        return text
    try:
        whole = _WHOLE_EXPRESSION.match(text)
        if whole:
            result = _expression(whole.group(1))(**context)
            if isinstance(result, StrictUndefined):
                raise UndefinedError(f"{whole.group(1)!r} is undefined")
            return result
        return _template(text).render(**context)
    except UndefinedError as exc:
        raise RenderError(f"template {text!r}: {exc}") from None
    except TemplateError as exc:
        raise RenderError(f"template {text!r}: {exc}") from None


def check_template_syntax(value: Any) -> list[str]:
    """Syntax errors of every template string inside `value` (for publish)."""
    problems: list[str] = []
    if isinstance(value, str) and "{" in value:
        try:
            _env.parse(value)
        except TemplateError as exc:
            problems.append(f"template {value!r}: {exc}")
    elif isinstance(value, dict):
        for item in value.values():
            problems.extend(check_template_syntax(item))
    elif isinstance(value, list):
        for item in value:
            problems.extend(check_template_syntax(item))
    return problems
