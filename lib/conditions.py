"""Branch conditions as data, and the small evaluator that runs them.

A condition is a comparison on a path of the run context, or a combination:

    {"path": "steps.score.total", "op": ">=", "value": 70}
    {"all": [cond, ...]}   {"any": [cond, ...]}   {"not": cond}

`contains_any` matches whole words of a list, e.g. competitor names;
`empty` holds for a missing, null, empty string, list or object.

Nothing an operator types is ever executed as code: paths are looked up key
by key, and operators come from a fixed table.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lib.context import MISSING, resolve

Op = Literal[
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "in",
    "not_in",
    "contains",
    "contains_any",
    "exists",
    "not_exists",
    "empty",
]


def _compare(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], bool]:
    def apply(left: Any, right: Any) -> bool:
        try:
            return bool(fn(left, right))
        except TypeError:
            return False  # None < 70 and the like: not a match, not a crash

    return apply


def _contains_any(left: Any, words: Any) -> bool:
    """Whether text (or any string in a list) holds any of `words` as a whole
    word, ignoring case: "Acme" matches "acme's offer", not "acmeville"."""
    if isinstance(words, str) or not isinstance(words, list | tuple):
        return False
    texts = left if isinstance(left, list) else [left]
    haystack = " ".join(str(text) for text in texts).casefold()
    return any(
        re.search(rf"(?<!\w){re.escape(str(word).casefold())}(?!\w)", haystack)
        for word in words
        if str(word).strip()
    )


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": _compare(operator.lt),
    "<=": _compare(operator.le),
    ">": _compare(operator.gt),
    ">=": _compare(operator.ge),
    "in": _compare(lambda left, right: left in right),
    "not_in": _compare(lambda left, right: left not in right),
    "contains": _compare(lambda left, right: right in left),
    "contains_any": _contains_any,
}


class Compare(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, pattern=r"^[A-Za-z_][\w]*(\.[\w]+)*$")
    op: Op
    value: Any = None


class AllOf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    all: list[Condition] = Field(min_length=1)


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    any: list[Condition] = Field(min_length=1)


class Not(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    not_: Condition = Field(alias="not")


Condition = Compare | AllOf | AnyOf | Not
AllOf.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()


def evaluate(condition: Condition, context: dict[str, Any]) -> bool:
    """True when `condition` holds for `context`. A missing path is no match."""
    if isinstance(condition, AllOf):
        return all(evaluate(c, context) for c in condition.all)
    if isinstance(condition, AnyOf):
        return any(evaluate(c, context) for c in condition.any)
    if isinstance(condition, Not):
        return not evaluate(condition.not_, context)
    found = resolve(context, condition.path)
    if condition.op == "exists":
        return found is not MISSING
    if condition.op == "not_exists":
        return found is MISSING
    if condition.op == "empty":
        return found is MISSING or found is None or found == "" or found == [] or found == {}
    if found is MISSING:
        return False
    return _OPS[condition.op](found, condition.value)
