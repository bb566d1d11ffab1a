"""Console pages of evaluation: experiments compared side by side, shadow
rollouts compared with the live version and with what people decided.

The experiment page polls its report (an htmx partial) while the
experiment runs; each look scores the trials whose runs are over."""

from __future__ import annotations

from contextlib import suppress

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from evals import experiments, shadow
from evals.models import Experiment, ShadowRollout
from lib.console import after_post, console_view, is_partial
from policies import audit
from runs.engine.errors import EngineError


@require_GET
@console_view("evals.view_experiment")
def experiment_list(request: HttpRequest) -> HttpResponse:
    rows = Experiment.objects.select_related("eval_set__workflow").prefetch_related(
        "arms__version"
    )[:100]
    return render(
        request, "console/experiments/list.html", {"experiments": rows, "nav": "experiments"}
    )


@require_GET
@console_view("evals.view_experiment")
def experiment_detail(request: HttpRequest, experiment_id: int) -> HttpResponse:
    """The comparison; while the experiment runs, the body polls itself
    (and stops polling once it is over)."""
    get_object_or_404(Experiment, pk=experiment_id)
    experiment = experiments.refresh_experiment(experiment_id=experiment_id)
    report = experiments.experiment_report(experiment=experiment)
    context = {"report": report, "experiment": experiment, "nav": "experiments"}
    if is_partial(request):
        return render(request, "console/experiments/partials/_report.html", context)
    return render(request, "console/experiments/detail.html", context)


@require_POST
@console_view("evals.change_experiment")
def experiment_cancel(request: HttpRequest, experiment_id: int) -> HttpResponse:
    with suppress(EngineError):  # already over: the page shows it
        experiments.cancel_experiment(
            experiment_id=experiment_id, actor=audit.actor_of(request.user)
        )
    return after_post(request, reverse("console-experiment-detail", args=[experiment_id]))


@require_POST
@console_view("evals.change_experiment")
def experiment_resume(request: HttpRequest, experiment_id: int) -> HttpResponse:
    with suppress(EngineError):  # not cancelled: the page shows it
        experiments.resume_experiment(
            experiment_id=experiment_id, actor=audit.actor_of(request.user)
        )
    return after_post(request, reverse("console-experiment-detail", args=[experiment_id]))


@require_GET
@console_view("evals.view_shadowrollout")
def shadow_list(request: HttpRequest) -> HttpResponse:
    rows = ShadowRollout.objects.select_related("workflow", "candidate__workflow")[:100]
    return render(request, "console/shadows/list.html", {"rollouts": rows, "nav": "shadows"})


@require_GET
@console_view("evals.view_shadowrollout")
def shadow_detail(request: HttpRequest, rollout_id: int) -> HttpResponse:
    rollout = get_object_or_404(
        ShadowRollout.objects.select_related("workflow", "candidate__workflow"), pk=rollout_id
    )
    report = shadow.shadow_report(rollout=rollout)
    return render(
        request,
        "console/shadows/detail.html",
        {"report": report, "rollout": rollout, "nav": "shadows"},
    )
