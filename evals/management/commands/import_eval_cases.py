"""Add the cases of a JSONL file to an eval set (created if missing):

    manage.py import_eval_cases lead-qualification regressions cases.jsonl

One JSON object a line: {"name", "input", "expectations", "critical",
"tags", "source_run"}. Every line is checked first: one bad line imports
nothing (exit status 1, the line named).
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evals.cases import InvalidCase, import_jsonl
from evals.models import EvalSet
from runs.models import Workflow


class Command(BaseCommand):
    help = "Import eval cases from a JSONL file into an eval set."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("workflow")
        parser.add_argument("eval_set")
        parser.add_argument("path", type=Path)

    def handle(self, *args, **options) -> None:
        workflow = Workflow.objects.filter(slug=options["workflow"]).first()
        if workflow is None:
            raise CommandError(f"no workflow {options['workflow']!r}")
        eval_set, _ = EvalSet.objects.get_or_create(workflow=workflow, name=options["eval_set"])
        try:
            with options["path"].open(encoding="utf-8") as lines:
                added = import_jsonl(eval_set=eval_set, lines=lines)
        except OSError as exc:
            raise CommandError(str(exc)) from None
        except InvalidCase as exc:
            raise CommandError(f"nothing imported: {exc}") from None
        self.stdout.write(f"{eval_set}: {added} case(s) imported")
