"""The `score` step: an llm step whose contract comes from a rubric.

The step asks the model for a 0–100 score per criterion of the rubric's
newest version (the criteria are appended to the configured prompt, and the
output schema is derived from them), then computes the weighted total and
the route its thresholds pick, and takes the edge named after the route.
Everything an llm step does applies: repair of a reply that misses the
schema, escape on refusal or truncation, budgets, the scripted and replay
providers.

What the step decided is kept in a `runs.models.Score` row, one per (run,
seq). A step executed again (after a crash, or retried) finds its row and
re-totals the recorded criterion scores against the rubric's newest version
instead of asking the model again; it asks again only when that version has
a criterion the row lacks.

Caching: the answer worth caching is the model's criterion scores, so the
step caches those itself (keyed by the rendered prompt, which holds the
criteria, and the rubric version), and still totals, routes and records a
`Score` row for every run.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from django.conf import settings
from pydantic import Field

from lib.context import check_template_syntax
from policies.models import Rubric, RubricVersion
from policies.rubrics import latest_version, route_for, total_for
from runs.engine import cache
from runs.engine.errors import StepError
from runs.engine.kinds import LLMKind, Outcome, StepContext, _render
from runs.llm.base import LLMRequest
from runs.models import Run, Score

if TYPE_CHECKING:
    from runs.engine.definition import StepDef

CACHE_KIND = "score:criteria"


class ScoreKind(LLMKind):
    # The worker hands each kind an instance of its own `Config`, so the
    # overrides below take `ScoreKind.Config` where LLMKind's take
    # `LLMKind.Config` (whose other subclass, `Bound`, ScoreKind itself
    # passes to LLMKind.execute): hence the ignore[override] on each.
    name = "score"
    required_edges = ()
    optional_edges = ("escape",)

    class Config(LLMKind.Config):
        rubric: str = Field(min_length=1, max_length=100)
        # Names the subject for people and the model, e.g. "{{ input.company }}".
        subject: str = ""

    class Bound(LLMKind.Config):
        """The llm config the step runs with: the operator's config plus the
        schema and criteria of one rubric version."""

        rubric_version: int
        criteria_prompt: str

    # Publish ---------------------------------------------------------------

    def check(self, config: Config) -> list[str]:  # type: ignore[override]
        problems = super().check(config)
        problems += check_template_syntax(config.subject)
        if config.output_schema is not None:
            problems.append("output_schema comes from the rubric's criteria; leave it out")
        if not Rubric.objects.filter(name=config.rubric).exists():
            problems.append(f"no rubric named {config.rubric!r}")
        elif latest_version(config.rubric) is None:
            problems.append(f"rubric {config.rubric!r} has never been saved")
        return problems

    def edge_labels(self, config: Config) -> tuple[set[str], set[str]]:  # type: ignore[override]
        """Any route the rubric has ever had may name an edge. None is
        required here: a definition is parsed again whenever a worker loads
        it, and a route a manager adds later must not make an older,
        published workflow unloadable; `check_edges` holds publish to the
        routes of the newest version, and the step fails at run time, naming
        the route, if it is sent down a route it has no edge for."""
        snapshots = RubricVersion.objects.filter(rubric__name=config.rubric).values_list(
            "snapshot", flat=True
        )
        routes = {route["route"] for snapshot in snapshots for route in snapshot["routes"]}
        return set(), {*self.optional_edges, *routes}

    def check_edges(self, config: Config, edges: dict[str, str]) -> list[str]:
        """Routes of the rubric's newest version the step has no edge for."""
        version = latest_version(config.rubric)
        if version is None:
            return []
        return [
            f"rubric {config.rubric!r} v{version.number} has route {route['route']!r}, "
            f"which has no edge"
            for route in version.snapshot["routes"]
            if route["route"] not in edges
        ]

    # Execute ---------------------------------------------------------------

    def cacheable(self, config: Config) -> bool:  # type: ignore[override]
        # Lets a score step have a TTL. The worker's own cache entry for the
        # step is claimed and released around each execution but never
        # filled (it fills only `next` edges): that claim makes concurrent
        # runs with the same input wait for one model call, and `_ask`
        # caches the criterion scores that the next run reuses.
        return True

    def cache_material(self, config: Config, ctx: StepContext) -> Any:  # type: ignore[override]
        version = _version(config)
        request = self._request(self.bind(config, version, _subject(config, ctx)), ctx)
        return {
            "model": request.model,
            "system": request.system,
            "prompt": request.prompt,
            # A new version may total and route the same answer differently.
            "rubric_version": version.pk,
        }

    def bind(self, config: Config, version: RubricVersion, subject: str = "") -> Bound:
        """The llm config for `version`, with `subject` (already rendered)."""
        fields = config.model_dump(exclude={"rubric", "subject"})
        fields["output_schema"] = output_schema(version.snapshot)
        block = criteria_prompt(version.snapshot, subject=subject)
        return self.Bound(**fields, rubric_version=version.pk, criteria_prompt=block)

    @staticmethod
    def _request(config: LLMKind.Config, ctx: StepContext) -> LLMRequest:
        request = LLMKind._request(config, ctx)
        block = getattr(config, "criteria_prompt", "")
        if not block:
            return request
        # Appended after the operator's prompt is rendered: criterion
        # descriptions are managers' text and the subject is data, so
        # neither is ever read as a template.
        return request.model_copy(update={"prompt": f"{request.prompt}\n\n{block}"})

    def execute(self, config: Config, ctx: StepContext) -> Outcome:  # type: ignore[override]
        version = _version(config)
        snapshot = version.snapshot
        subject = _subject(config, ctx)
        bound = self.bind(config, version, subject)
        step, workflow_id = _placement(ctx)
        recorded = Score.objects.filter(run_id=ctx.run_id, seq=ctx.seq).first()
        keys = [c["key"] for c in snapshot["criteria"]]
        if recorded is not None and all(key in recorded.criteria for key in keys):
            # Executed again after its decision was written: the model's
            # scores are on record, so they are re-totalled, not re-bought.
            request = self._request(bound, ctx)
            outcome = Outcome(input={"system": request.system, "prompt": request.prompt})
            scores, reasons = {key: recorded.criteria[key] for key in keys}, {}
        else:
            outcome = self._ask(bound, ctx, step, workflow_id)
            if outcome.edge == "escape" or outcome.wait:  # no scores (yet)
                return outcome
            scores = {key: outcome.output["criteria"][key] for key in keys}
            raw_reasons = outcome.output.get("reasons") or {}
            reasons = {key: raw_reasons[key] for key in keys if key in raw_reasons}
        total = total_for(snapshot, scores)
        route = route_for(snapshot, total)
        outcome.output = {
            "rubric": config.rubric,
            "rubric_version": version.number,
            "subject": subject,
            "criteria": scores,
            "total": total,
            "route": route,
            "reasons": reasons,
        }
        outcome.edge = route
        if step is not None and route not in step.edges:
            # The worker fails the step (not retryable) and quotes this.
            outcome.output["reason"] = (
                f"rubric {config.rubric!r} v{version.number} routes this subject to "
                f"{route!r}, but step {ctx.step_key!r} has no {route!r} edge: add one and "
                "publish the workflow"
            )
            return outcome
        _record(ctx, version, subject, scores, total, route, recorded)
        return outcome

    def _ask(
        self, bound: Bound, ctx: StepContext, step: StepDef | None, workflow_id: int | None
    ) -> Outcome:
        """The llm step's execution, answered from the criteria cache when
        the step has a TTL and a live entry exists."""
        ttl = step.cache_ttl_s if step is not None else 0
        if not ttl or ctx.replay_of is not None:
            return LLMKind.execute(self, bound, ctx)
        assert step is not None and workflow_id is not None  # a TTL comes from the run's step
        request = self._request(bound, ctx)
        key = cache.cache_key(
            workflow_id=workflow_id,
            step_key=ctx.step_key,
            kind=CACHE_KIND,
            config=bound.model_dump(mode="json"),
            material={"model": request.model, "system": request.system, "prompt": request.prompt},
        )
        hit = cache.lookup(key)
        token = f"{ctx.run_id}:{ctx.seq}:{ctx.attempt}"
        hold: dict[str, Any] = {
            "workflow_id": workflow_id,
            "step_key": ctx.step_key,
            "token": token,
        }
        claimed = hit is None and cache.claim(
            key, **hold, hold_s=step.timeout_s + settings.BOSUN_LEASE_MARGIN_S
        )
        if hit is not None:
            return Outcome(
                output=hit.output,
                input={"cache_key": key},
                model_answered=hit.model,
                cache_hit=True,
                cost_saved_usd=hit.cost_usd,
            )
        try:
            outcome = LLMKind.execute(self, bound, ctx)
        except BaseException:
            if claimed:
                cache.release(key, token=token)
            raise
        if claimed and outcome.edge != "escape" and not outcome.wait:
            answer = {"criteria": outcome.output["criteria"]}
            answer["reasons"] = outcome.output.get("reasons") or {}
            cache.fill(
                key,
                token=token,
                output=answer,
                edge="scored",
                model=outcome.model_answered,
                cost_usd=outcome.model_usd,
                ttl_s=ttl,
                run_id=ctx.run_id,
            )
        elif claimed:
            cache.release(key, token=token)
        return outcome


# Helpers -----------------------------------------------------------------------


def output_schema(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema a reply must meet: a 0–100 number per criterion, and
    optionally a reason per criterion."""
    keys = [c["key"] for c in snapshot["criteria"]]
    return {
        "type": "object",
        "required": ["criteria"],
        "properties": {
            "criteria": {
                "type": "object",
                "required": keys,
                "properties": {
                    c["key"]: {
                        "type": "number",
                        "minimum": 0,
                        "maximum": 100,
                        "description": c["description"],
                    }
                    for c in snapshot["criteria"]
                },
            },
            "reasons": {
                "type": "object",
                "properties": {key: {"type": "string"} for key in keys},
            },
        },
    }


def criteria_prompt(snapshot: dict[str, Any], *, subject: str = "") -> str:
    """The block appended to the step's prompt: what to score and how to reply."""
    lines = []
    if subject:
        lines.append(f"Subject: {subject}")
    lines.append("Score the subject on each criterion below, from 0 (not at all) to 100 (fully):")
    lines += [f"- {c['key']}: {c['description'].strip()}" for c in snapshot["criteria"]]
    example = {
        "criteria": {c["key"]: "<0-100>" for c in snapshot["criteria"]},
        "reasons": {c["key"]: "<one sentence>" for c in snapshot["criteria"]},
    }
    lines.append(f"Reply with JSON only, in this shape: {json.dumps(example)}")
    return "\n".join(lines)


def _version(config: ScoreKind.Config) -> RubricVersion:
    version = latest_version(config.rubric)
    if version is None:
        raise StepError(
            f"rubric {config.rubric!r} does not exist or was never saved",
            retryable=False,
            error_type="rubric",
        )
    return version


def _subject(config: ScoreKind.Config, ctx: StepContext) -> str:
    if not config.subject:
        return ""
    if ctx.redact_fields:
        # The subject is shown to the model and kept on the Score row:
        # rendered from the same redacted input the prompt sees.
        from lib.screening import redact_fields

        redacted = redact_fields(ctx.variables.get("input") or {}, list(ctx.redact_fields))
        ctx = replace(ctx, variables={**ctx.variables, "input": redacted})
    return str(_render(config.subject, ctx))[:300]


def _placement(ctx: StepContext) -> tuple[StepDef | None, int | None]:
    """The step's definition in the run's workflow version (its edges and
    cache TTL), and the workflow id; (None, None) outside a run."""
    from runs.engine.definition import load_definition  # it imports the registry

    row = Run.objects.filter(pk=ctx.run_id).values_list("version_id", "workflow_id").first()
    if row is None:
        return None, None
    return load_definition(row[0]).steps.get(ctx.step_key), row[1]


def _record(
    ctx: StepContext,
    version: RubricVersion,
    subject: str,
    scores: dict[str, Any],
    total: float,
    route: str,
    recorded: Score | None,
) -> None:
    """Keep the decision: one row per (run, seq), rewritten only when a
    re-execution totals it against a newer version. Only the worker holding
    the run's lease gets here, and the unique (run, seq) constraint makes a
    crash between this write and the checkpoint harmless."""
    fields = {
        "step_key": ctx.step_key,
        "rubric_version": version,
        "subject": subject,
        "criteria": scores,
        "total": total,
        "route": route,
    }
    if recorded is None:
        Score.objects.get_or_create(run_id=ctx.run_id, seq=ctx.seq, defaults=fields)
    elif (recorded.rubric_version_id, recorded.total, recorded.route) != (version.pk, total, route):
        Score.objects.filter(pk=recorded.pk).update(**fields)
