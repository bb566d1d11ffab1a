"""Workflow graphs as server-rendered SVG: a layered layout and its drawing.

`graph_of(data)` reads a workflow snapshot (the shape `WorkflowVersion.definition`
holds, or a draft's `snapshot`) into steps and labelled edges, `layout(graph)`
places them, `render(layout, overlay)` draws the SVG. Pure Python, no
database, deterministic: the same snapshot gives the same bytes, so a
version's layout is cached by its checksum.

The layout is the usual layered one (Sugiyama, simplified):
1. a depth-first walk from the entry step (edges in their written order)
   finds the back edges of loops; they are drawn apart, up the right side;
2. each step's layer is its longest path from a root over the other edges;
3. an edge that spans several layers gets a waypoint in each layer between,
   so it is routed around the steps instead of through them;
4. a few barycentre sweeps order each layer to cut crossings (ties keep
   the walk's order).

Every text that reaches the SVG (step keys, kinds, labels, problems) is
escaped; a step key names no element id (ids are numbered).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

NODE_W = 184
NODE_H = 60
DUMMY_W = 16
H_GAP = 40
V_GAP = 64
PAD = 24
LANE_GAP = 18
LANE_LABEL_W = 90
# Edge labels drawn in their own style: the ways out of the normal path.
SPECIAL_EDGES = {"escape", "exhausted", "flagged", "rejected", "refused"}
PAID_KINDS = {"llm", "score"}


@dataclass(frozen=True)
class GraphStep:
    key: str
    kind: str
    edges: tuple[tuple[str, str], ...]  # (label, target key), as written
    marks: tuple[str, ...] = ()  # "paid", "approval"


@dataclass(frozen=True)
class Graph:
    entry: str
    steps: tuple[GraphStep, ...]


@dataclass(frozen=True)
class PlacedNode:
    key: str
    kind: str
    x: float
    y: float
    marks: tuple[str, ...]
    missing: bool = False  # an edge's target that is not a step
    entry: bool = False


@dataclass(frozen=True)
class PlacedEdge:
    source: str
    label: str
    target: str
    points: tuple[tuple[float, float], ...]
    label_at: tuple[float, float]
    back: bool  # drawn up the right side (a loop's way back)

    @property
    def style(self) -> str:
        return self.label if self.label in SPECIAL_EDGES else "normal"


@dataclass(frozen=True)
class Layout:
    nodes: dict[str, PlacedNode]
    edges: tuple[PlacedEdge, ...]
    width: float
    height: float
    layers: dict[str, int]


@dataclass
class Overlay:
    """What a page adds to a layout: a run's path, problems of a draft."""

    visited: dict[str, str] = field(default_factory=dict)  # key -> stats label
    taken: set[tuple[str, str]] = field(default_factory=set)  # (source, label)
    current: str = ""
    failed: str = ""
    problems: dict[str, list[str]] = field(default_factory=dict)


# --- reading a snapshot -------------------------------------------------------


def graph_of(data: Mapping[str, Any], *, approve_tools: Iterable[str] = ()) -> Graph:
    """The graph of a workflow snapshot. Steps that call paid tools, llm and
    score steps are marked `paid`; approval steps and tools named in
    `approve_tools` (the policy's `approve` autonomy rules) `approval`."""
    approve = set(approve_tools)
    prices = getattr(settings, "BOSUN_TOOL_PRICES", {}) or {}
    steps = []
    raw_steps = data.get("steps") or {}
    for key, raw in raw_steps.items() if isinstance(raw_steps, dict) else ():
        raw = raw if isinstance(raw, dict) else {}
        kind = str(raw.get("kind") or "?")
        config: dict[str, Any] = raw["config"] if isinstance(raw.get("config"), dict) else {}
        edges: dict[str, Any] = raw["edges"] if isinstance(raw.get("edges"), dict) else {}
        marks = []
        tool = config.get("tool") if kind == "tool" else None
        if kind in PAID_KINDS or (isinstance(tool, str) and tool in prices):
            marks.append("paid")
        if kind == "approval" or (isinstance(tool, str) and tool in approve):
            marks.append("approval")
        steps.append(
            GraphStep(
                key=str(key),
                kind=kind,
                edges=tuple((str(label), str(target)) for label, target in edges.items()),
                marks=tuple(marks),
            )
        )
    return Graph(entry=str(data.get("entry") or ""), steps=tuple(steps))


def approve_tools_of(autonomy: Any) -> list[str]:
    """Tools a policy's autonomy rules may hold for approval."""
    if not isinstance(autonomy, list):
        return []
    return sorted(
        {
            rule["tool"]
            for rule in autonomy
            if isinstance(rule, dict) and rule.get("mode") == "approve" and rule.get("tool")
        }
    )


# --- layout ---------------------------------------------------------------------


def layout(graph: Graph) -> Layout:
    """Place every step (and every missing edge target) and route every edge."""
    kinds = {step.key: step for step in graph.steps}
    order: list[str] = [step.key for step in graph.steps]
    missing = [
        target
        for step in graph.steps
        for _, target in step.edges
        if target not in kinds and target not in order
    ]
    for target in missing:
        if target not in order:
            order.append(target)
    successors: dict[str, list[tuple[str, str]]] = {key: [] for key in order}
    for step in graph.steps:
        successors[step.key] = list(step.edges)

    walk, back = _walk(graph.entry if graph.entry in successors else "", order, successors)
    forward = {
        key: [t for label, t in successors[key] if (key, label) not in back] for key in order
    }
    layers = _layers(walk, forward)
    rows, chains = _rows(walk, layers, successors, back)
    rows = _order(rows, chains, walk)
    positions, width = _coordinates(rows)
    nodes = {
        key: PlacedNode(
            key=key,
            kind=kinds[key].kind if key in kinds else "missing",
            x=positions[key][0],
            y=positions[key][1],
            marks=kinds[key].marks if key in kinds else (),
            missing=key not in kinds,
            entry=key == graph.entry,
        )
        for key in order
    }
    height = PAD * 2 + (max(layers.values(), default=0) + 1) * (NODE_H + V_GAP) - V_GAP
    edges, width = _route(order, successors, back, chains, positions, width)
    return Layout(nodes=nodes, edges=tuple(edges), width=width, height=height, layers=layers)


def _walk(
    entry: str, order: list[str], successors: dict[str, list[tuple[str, str]]]
) -> tuple[list[str], set[tuple[str, str]]]:
    """Depth-first from the entry, then from each step not reached: the visit
    order, and the back edges (to a step still on the walk's stack)."""
    seen: set[str] = set()
    visit: list[str] = []
    back: set[tuple[str, str]] = set()
    for root in ([entry] if entry else []) + order:
        if root in seen:
            continue
        seen.add(root)
        visit.append(root)
        stack: list[tuple[str, int]] = [(root, 0)]
        on_stack = {root}
        while stack:
            node, index = stack.pop()
            edges = successors[node]
            if index >= len(edges):
                on_stack.discard(node)
                continue
            stack.append((node, index + 1))
            label, target = edges[index]
            if target in on_stack:
                back.add((node, label))
            elif target not in seen:
                seen.add(target)
                visit.append(target)
                on_stack.add(target)
                stack.append((target, 0))
    return visit, back


def _layers(walk: list[str], forward: dict[str, list[str]]) -> dict[str, int]:
    """Longest path from a root over the forward edges (they form a DAG)."""
    indegree = {key: 0 for key in walk}
    for key in walk:
        for target in forward[key]:
            indegree[target] += 1
    layer = {key: 0 for key in walk}
    ready = [key for key in walk if indegree[key] == 0]
    while ready:
        key = ready.pop(0)
        for target in forward[key]:
            layer[target] = max(layer[target], layer[key] + 1)
            indegree[target] -= 1
            if indegree[target] == 0:
                ready.append(target)
    return layer


Chain = tuple[str, str, str, tuple[str, ...]]  # source, label, target, waypoints


def _rows(
    walk: list[str],
    layers: dict[str, int],
    successors: dict[str, list[tuple[str, str]]],
    back: set[tuple[str, str]],
) -> tuple[list[list[str]], list[Chain]]:
    """Each layer's members, waypoints of long edges included."""
    depth = max(layers.values(), default=0) + 1
    rows: list[list[str]] = [[] for _ in range(depth)]
    for key in walk:
        rows[layers[key]].append(key)
    chains: list[Chain] = []
    for key in walk:
        for label, target in successors[key]:
            if (key, label) in back:
                chains.append((key, label, target, ()))
                continue
            waypoints = []
            for layer in range(layers[key] + 1, layers[target]):
                name = f"\x00{key}\x00{label}\x00{layer}"  # never a step key
                rows[layer].append(name)
                waypoints.append(name)
            chains.append((key, label, target, tuple(waypoints)))
    return rows, chains


def _order(rows: list[list[str]], chains: list[Chain], walk: list[str]) -> list[list[str]]:
    """Barycentre sweeps, down then up, four times; stable on ties."""
    above: dict[str, list[str]] = {}
    below: dict[str, list[str]] = {}
    for source, _, target, waypoints in chains:
        if not waypoints and source == target:
            continue
        path = [source, *waypoints, target]
        for upper, lower in zip(path, path[1:], strict=False):
            below.setdefault(upper, []).append(lower)
            above.setdefault(lower, []).append(upper)
    rows = [list(row) for row in rows]
    for _ in range(4):
        for index in range(1, len(rows)):
            rows[index] = _sorted_by(rows[index], rows[index - 1], above)
        for index in range(len(rows) - 2, -1, -1):
            rows[index] = _sorted_by(rows[index], rows[index + 1], below)
    return rows


def _sorted_by(row: list[str], fixed: list[str], neighbours: dict[str, list[str]]) -> list[str]:
    where = {key: index for index, key in enumerate(fixed)}

    def centre(item: tuple[int, str]) -> tuple[float, int]:
        index, key = item
        linked = [where[n] for n in neighbours.get(key, ()) if n in where]
        return (sum(linked) / len(linked) if linked else float(index), index)

    return [key for _, key in sorted(enumerate(row), key=centre)]


def _coordinates(rows: list[list[str]]) -> tuple[dict[str, tuple[float, float]], float]:
    """Top-left corner of each member; layers centred on the widest."""

    def width_of(key: str) -> float:
        return DUMMY_W if key.startswith("\x00") else NODE_W

    widths = [sum(width_of(k) for k in row) + H_GAP * max(len(row) - 1, 0) for row in rows]
    widest = max(widths, default=NODE_W)
    positions: dict[str, tuple[float, float]] = {}
    for layer, (row, row_width) in enumerate(zip(rows, widths, strict=True)):
        x = PAD + (widest - row_width) / 2
        y = PAD + layer * (NODE_H + V_GAP)
        for key in row:
            positions[key] = (x, y)
            x += width_of(key) + H_GAP
    return positions, PAD * 2 + widest


def _route(
    order: list[str],
    successors: dict[str, list[tuple[str, str]]],
    back: set[tuple[str, str]],
    chains: list[Chain],
    positions: dict[str, tuple[float, float]],
    width: float,
) -> tuple[list[PlacedEdge], float]:
    """Points of every edge. Parallel edges of one step fan out at both ends;
    back edges each get a lane on the right."""
    fan: dict[str, int] = {}
    outgoing = {key: len(successors[key]) for key in order}
    incoming: dict[str, int] = {}
    for _, _, target, _ in chains:
        incoming[target] = incoming.get(target, 0) + 1
    arriving: dict[str, int] = {}
    lane_x = width - PAD + LANE_GAP
    edges = []
    for source, label, target, waypoints in chains:
        sx, sy = positions[source]
        tx, ty = positions[target]
        out_index = fan.get(source, 0)
        fan[source] = out_index + 1
        in_index = arriving.get(target, 0)
        arriving[target] = in_index + 1
        out_dx = _spread(out_index, outgoing[source])
        in_dx = _spread(in_index, incoming[target])
        if source == target:
            right = sx + NODE_W
            points: tuple[tuple[float, float], ...] = (
                (right, sy + NODE_H * 0.3),
                (right + 28, sy + NODE_H * 0.3),
                (right + 28, sy + NODE_H * 0.7),
                (right, sy + NODE_H * 0.7),
            )
            edges.append(PlacedEdge(source, label, target, points, (right + 32, sy + 20), True))
        elif (source, label) in back:
            start = (sx + NODE_W, sy + NODE_H / 2 + out_dx / 8)
            end = (tx + NODE_W, ty + NODE_H / 2 + in_dx / 8)
            points = (start, (lane_x, start[1]), (lane_x, end[1]), end)
            edges.append(
                PlacedEdge(
                    source, label, target, points, (lane_x + 4, (sy + ty + NODE_H) / 2), True
                )
            )
            lane_x += LANE_GAP
        else:
            start = (sx + NODE_W / 2 + out_dx, sy + NODE_H)
            middle = [
                (positions[w][0] + DUMMY_W / 2, positions[w][1] + NODE_H / 2) for w in waypoints
            ]
            end = (tx + NODE_W / 2 + in_dx, ty)
            points = (start, *middle, end)
            # On the first curve, alternately nearer and farther from the
            # step, so the labels of a step's fanned-out edges do not collide.
            label_at = _on_curve(start, points[1], 0.38 if out_index % 2 == 0 else 0.62)
            edges.append(PlacedEdge(source, label, target, points, label_at, False))
    has_lanes = lane_x > width - PAD + LANE_GAP
    return edges, (lane_x + LANE_LABEL_W if has_lanes else width)


def _on_curve(
    start: tuple[float, float], end: tuple[float, float], t: float
) -> tuple[float, float]:
    """The point at `t` of the S-curve `_path` draws from start to end."""
    mid = (start[1] + end[1]) / 2
    u = 1 - t
    x = u**3 * start[0] + 3 * u * u * t * start[0] + 3 * u * t * t * end[0] + t**3 * end[0]
    y = u**3 * start[1] + 3 * u * u * t * mid + 3 * u * t * t * mid + t**3 * end[1]
    return (x, y + 4)


def _spread(index: int, count: int) -> float:
    if count <= 1:
        return 0.0
    step = min(36.0, (NODE_W - 40) / (count - 1))
    return (index - (count - 1) / 2) * step


@lru_cache(maxsize=256)
def _cached(checksum: str, graph: Graph) -> Layout:
    return layout(graph)


def cached_layout(graph: Graph, checksum: str) -> Layout:
    """The layout of a published version's graph, computed once per checksum
    (and per marks: a policy's autonomy rules are part of the graph)."""
    return _cached(checksum, graph)


# --- drawing ---------------------------------------------------------------------


def render(
    placed: Layout,
    overlay: Overlay | None = None,
    *,
    title: str,
    description: str,
    element_id: str = "workflow-graph",
) -> SafeString:
    """The SVG of a layout, with an optional overlay, as safe markup."""
    overlay = overlay or Overlay()
    uid = escape(element_id)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="workflow-graph" id="{uid}" '
        f'role="img" aria-labelledby="{uid}-title {uid}-desc" '
        f'viewBox="0 0 {placed.width:.0f} {placed.height:.0f}" '
        f'width="{placed.width:.0f}" height="{placed.height:.0f}">',
        f'<title id="{uid}-title">{escape(title)}</title>',
        f'<desc id="{uid}-desc">{escape(description)}</desc>',
        "<defs>",
        *(
            f'<marker id="{uid}-arrow-{name}" class="arrow arrow-{name}" viewBox="0 0 10 10" '
            'refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" '
            'orient="auto-start-reverse">'
            '<path d="M0,0 L10,5 L0,10 z"/></marker>'
            for name in ("normal", "special", "taken")
        ),
        "</defs>",
    ]
    for edge in placed.edges:
        out.append(_edge_svg(edge, overlay, uid))
    for number, node in enumerate(placed.nodes.values(), start=1):
        out.append(_node_svg(number, node, overlay))
    out.append("</svg>")
    return mark_safe("".join(out))  # noqa: S308  # every text above went through escape()


def _edge_svg(edge: PlacedEdge, overlay: Overlay, uid: str) -> str:
    taken = (edge.source, edge.label) in overlay.taken
    classes = ["edge", f"edge-{edge.style}"]
    if edge.back:
        classes.append("edge-back")
    if taken:
        classes.append("taken")
    marker = "taken" if taken else ("special" if edge.style != "normal" else "normal")
    path = _path(edge.points, edge.back)
    lx, ly = edge.label_at
    anchor = "start" if edge.back else "middle"
    label = escape(edge.label)
    return (
        f'<g class="{" ".join(classes)}" data-edge="{escape(edge.source)}:{label}">'
        f"<title>{escape(edge.source)} —{label}→ {escape(edge.target)}</title>"
        f'<path d="{path}" marker-end="url(#{uid}-arrow-{marker})"/>'
        f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}" class="edge-label">{label}</text>'
        "</g>"
    )


def _path(points: tuple[tuple[float, float], ...], straight: bool) -> str:
    (x0, y0), rest = points[0], points[1:]
    parts = [f"M{x0:.1f},{y0:.1f}"]
    previous = (x0, y0)
    for x, y in rest:
        if straight:
            parts.append(f"L{x:.1f},{y:.1f}")
        else:  # a vertical S-curve between layers
            mid = (previous[1] + y) / 2
            parts.append(f"C{previous[0]:.1f},{mid:.1f} {x:.1f},{mid:.1f} {x:.1f},{y:.1f}")
        previous = (x, y)
    return " ".join(parts)


def _node_svg(number: int, node: PlacedNode, overlay: Overlay) -> str:
    key = node.key
    problems = overlay.problems.get(key, [])
    classes = ["node", f"kind-{escape(node.kind)}"]
    if node.missing:
        classes.append("missing")
    if node.entry:
        classes.append("entry")
    if key in overlay.visited:
        classes.append("visited")
    if key == overlay.current:
        classes.append("current")
    if key == overlay.failed:
        classes.append("failed")
    if problems:
        classes.append("problem")
    tooltip = [f"{key} ({'not a step' if node.missing else node.kind})"]
    tooltip += [f"needs {mark}" if mark == "approval" else mark for mark in node.marks]
    if key in overlay.visited and overlay.visited[key]:
        tooltip.append(overlay.visited[key])
    tooltip += problems
    x, y = node.x, node.y
    shown_key = key if len(key) <= 22 else key[:21] + "…"
    kind_line = "not a step" if node.missing else node.kind
    parts = [
        f'<g class="{" ".join(classes)}" id="graph-node-{number}" data-step="{escape(key)}">',
        f"<title>{escape(chr(10).join(tooltip))}</title>",
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="8"/>',
        f'<text x="{x + 10:.1f}" y="{y + 19:.1f}" class="node-key">{escape(shown_key)}</text>',
        f'<text x="{x + 10:.1f}" y="{y + 35:.1f}" class="node-kind">{escape(kind_line)}</text>',
    ]
    badge_x = x + NODE_W - 8
    for mark in reversed(node.marks):
        text = "$" if mark == "paid" else "review"
        parts.append(
            f'<text x="{badge_x:.1f}" y="{y + 19:.1f}" text-anchor="end" '
            f'class="badge badge-{mark}">{text}</text>'
        )
        badge_x -= 14 + 6 * len(text)
    stats = overlay.visited.get(key, "")
    if problems:
        stats = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    if stats:
        parts.append(
            f'<text x="{x + 10:.1f}" y="{y + 51:.1f}" class="node-stats">{escape(stats)}</text>'
        )
    parts.append("</g>")
    return "".join(parts)
