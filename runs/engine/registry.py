"""The step kinds a workflow may use, by name: an explicit list, no discovery."""

from __future__ import annotations

from typing import Any

from runs.engine.end_kind import EndKind
from runs.engine.graph_kinds import DedupKind, KnowledgeCheckKind, KnowledgeWriteKind
from runs.engine.kinds import ApprovalKind, BranchKind, Kind, LLMKind, ToolKind
from runs.engine.score_kind import ScoreKind

KINDS: dict[str, Kind[Any]] = {
    kind.name: kind()
    for kind in (
        ToolKind,
        BranchKind,
        ApprovalKind,
        EndKind,
        LLMKind,
        KnowledgeCheckKind,
        KnowledgeWriteKind,
        DedupKind,
        ScoreKind,
    )
}
