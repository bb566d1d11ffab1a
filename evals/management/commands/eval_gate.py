"""Run a workflow's eval set against its draft (or a version) and judge the
publish gate, for CI:

    manage.py eval_gate lead-qualification --draft
    manage.py eval_gate lead-qualification --version 7 --inline

The experiment compares the target with the live version (its baseline).
By default this waits for the workers (`manage.py worker`) to run the
cases; `--inline` runs them in this process instead (no cluster needed).
Exit status: 0 when the gate passes, 1 when it fails (the failing cases
are printed), 2 when the cases did not finish within `--timeout`.

Without a publish gate configured for the workflow, `--eval-set` names the
set and every case must pass.
"""

from __future__ import annotations

import time
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evals.experiments import refresh_experiment, start_experiment
from evals.gate import judge
from evals.models import EvalSet, ExperimentStatus, PublishGate, Trial
from runs.engine import Advance, advance_run
from runs.engine.definition import freeze_candidate
from runs.engine.errors import EngineError
from runs.models import TERMINAL_STATUSES, Run, Workflow


class Command(BaseCommand):
    help = "Run the eval set against the draft or a version; exit non-zero when the gate fails."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("workflow", help="The workflow's slug.")
        # `--version N` names a workflow version here, in place of Django's
        # own --version (the program's version).
        for action in [a for a in parser._actions if "--version" in a.option_strings]:
            parser._handle_conflict_resolve(action, [("--version", action)])
        target = parser.add_mutually_exclusive_group()
        target.add_argument("--draft", action="store_true", help="The draft (the default).")
        target.add_argument("--version", type=int, help="A published version's number.")
        parser.add_argument("--eval-set", default="", help="Without a publish gate: the set.")
        parser.add_argument("--inline", action="store_true", help="Run the cases in this process.")
        parser.add_argument("--timeout", type=float, default=1800.0, help="Seconds to wait.")
        parser.add_argument("--poll", type=float, default=1.0, help="Seconds between looks.")

    def handle(self, *args, **options) -> None:
        workflow = Workflow.objects.filter(slug=options["workflow"]).first()
        if workflow is None:
            raise CommandError(f"no workflow {options['workflow']!r}")
        gate = self._gate(workflow, options["eval_set"])
        try:
            if options["version"] is not None:
                target = workflow.versions.published().get(number=options["version"])
            else:
                target = freeze_candidate(workflow=workflow)
        except workflow.versions.model.DoesNotExist:
            raise CommandError(f"{workflow.slug} has no version {options['version']}") from None
        except EngineError as exc:
            raise CommandError(str(exc)) from None
        live = workflow.current_version
        versions = [v for v in (live, target) if v is not None]
        experiment = start_experiment(
            eval_set=gate.eval_set, versions=versions, actor="system:eval_gate", note="eval_gate"
        )
        self.stdout.write(
            f"experiment {experiment.pk}: {gate.eval_set.cases.count()} case(s) on "
            + ", ".join(arm.label for arm in experiment.arms.all())
        )
        deadline = time.monotonic() + options["timeout"]
        while True:
            if options["inline"]:
                self._advance(experiment.pk)
            experiment = refresh_experiment(experiment_id=experiment.pk)
            if experiment.status != ExperimentStatus.RUNNING:
                break
            if time.monotonic() > deadline:
                raise CommandError(
                    f"experiment {experiment.pk}: the cases did not finish in time", returncode=2
                )
            time.sleep(options["poll"] if not options["inline"] else 0.05)
        verdict = judge(gate=gate, experiment=experiment, checksum=target.checksum)
        for problem in verdict.problems:
            self.stdout.write(f"  {problem}")
        if not verdict.passed:
            raise CommandError(f"the eval gate fails for {target}", returncode=1)
        self.stdout.write(self.style.SUCCESS(f"the eval gate passes for {target}"))

    @staticmethod
    def _gate(workflow: Workflow, eval_set_name: str) -> PublishGate:
        gate = PublishGate.objects.filter(workflow=workflow).select_related("eval_set").first()
        if eval_set_name:
            eval_set = EvalSet.objects.filter(workflow=workflow, name=eval_set_name).first()
            if eval_set is None:
                raise CommandError(f"{workflow.slug} has no eval set {eval_set_name!r}")
            if gate is None:
                return PublishGate(workflow=workflow, eval_set=eval_set, min_pass_rate=Decimal(100))
            gate.eval_set = eval_set
        if gate is None:
            raise CommandError(f"{workflow.slug} has no publish gate; name an --eval-set")
        return gate

    @staticmethod
    def _advance(experiment_id: int) -> None:
        """Advance this experiment's runs here, as a worker would."""
        runs = Run.objects.filter(
            pk__in=Trial.objects.filter(arm__experiment_id=experiment_id).values("run_id")
        ).exclude(status__in=TERMINAL_STATUSES)
        for run_id in runs.values_list("pk", flat=True):
            while advance_run(run_id) not in (Advance.NOT_CLAIMED, Advance.LEASE_LOST):
                pass
