"""The graph of a published version, as the console and admin draw it:
its steps marked by the autonomy rules that apply, the layout cached per
version checksum (`runs.graph_svg`)."""

from __future__ import annotations

from typing import Any

from django.utils.safestring import SafeString

from runs import graph_svg
from runs.models import WorkflowVersion

LEGEND = "$ paid step (model or priced tool) · review: may wait for a person"


def version_graph(
    version: WorkflowVersion,
    *,
    autonomy: Any = None,
    overlay: graph_svg.Overlay | None = None,
    element_id: str = "workflow-graph",
    title: str = "",
) -> SafeString:
    """The SVG of a version's graph. `autonomy`: the autonomy rules to mark
    tools that need approval (default: the workflow's current policy)."""
    if autonomy is None:
        policy = version.workflow.policy
        autonomy = policy.autonomy if policy is not None else []
    graph = graph_svg.graph_of(
        version.definition, approve_tools=graph_svg.approve_tools_of(autonomy)
    )
    placed = graph_svg.cached_layout(graph, version.checksum)
    return graph_svg.render(
        placed,
        overlay,
        title=title or f"Graph of {version}",
        description=_describe(graph, placed),
        element_id=element_id,
    )


def _describe(graph: graph_svg.Graph, placed: graph_svg.Layout) -> str:
    edges = sum(len(step.edges) for step in graph.steps)
    return (
        f"{len(graph.steps)} steps and {edges} edges, starting at {graph.entry}; "
        "each step is a box with its key and kind, each edge an arrow with its label."
    )
