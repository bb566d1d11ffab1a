"""The tool protocol and the explicit registry of tools.

A tool is a class with a name, a pydantic `Args` model, a `Result` model, a
side-effect class and `run()`. The registry is `settings.BOSUN_TOOLS`, a
literal dict of dotted paths: nothing is discovered by import side effects.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import ClassVar, Literal

from django.conf import settings
from django.utils.module_loading import import_string
from pydantic import BaseModel

SideEffect = Literal["read", "write_idempotent", "write_unsafe"]


@dataclass(frozen=True)
class ToolCall:
    """Who is calling, and the stable key a write passes to the outside."""

    run_id: int
    step_key: str
    seq: int
    attempt: int
    idempotency_key: str
    timeout_s: float


class ToolError(Exception):
    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Tool:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    side_effect: ClassVar[SideEffect] = "read"
    Args: ClassVar[type[BaseModel]]
    Result: ClassVar[type[BaseModel]]

    def run(self, args: BaseModel, call: ToolCall) -> BaseModel:  # pragma: no cover - protocol
        raise NotImplementedError


class UnknownTool(LookupError):
    pass


@cache
def _load(path: str) -> type[Tool]:
    return import_string(path)


def get_tool(name: str) -> Tool:
    try:
        path = settings.BOSUN_TOOLS[name]
    except KeyError:
        raise UnknownTool(f"no tool named {name!r} is registered") from None
    return _load(path)()


def tool_names() -> list[str]:
    return sorted(settings.BOSUN_TOOLS)
