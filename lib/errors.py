"""The domain's error hierarchy, shared by the apps and mapped once by each
interface (the API's exception handlers, the console's messages).

Each error has a stable `code`. The engine's own errors (`runs.engine.errors`)
extend these; the other apps raise them directly, so they need not import
the engine to say "not found" or "invalid input".
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error raised on purpose to refuse an operation."""

    code = "error"


class NotFound(DomainError):
    code = "not_found"


class InvalidState(DomainError):
    """The object is not in a state that allows the operation."""

    code = "invalid_state"


class InvalidInput(DomainError):
    """Input breaks a schema or a rule; `fields` names each problem."""

    code = "invalid_input"

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
