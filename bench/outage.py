"""Outage benchmark: a model provider (or a vendor) fails for two minutes, then recovers.

    DATABASE_URL=postgresql://USER:PASS@HOST:PORT/DB .venv/bin/python -m bench.outage

The real path: a `manage.py worker` cluster (2 worker processes, the
production doorbell) and a `manage.py sweeper` (1 s) on a fresh PostgreSQL
database (`bosun_bench_outage`, or BOSUN_BENCH_DB). Each run is one call
and an end. The other side is a fake served by this process on a loopback
port, answering after `--latency-s`, or at once with an error during the
outage:

* `llm`: an `llm` step through the `anthropic` provider (the official SDK,
  its own retries off) against a fake Messages API: 529 `overloaded_error`
  during the outage; breaker `llm:anthropic:claude-haiku-4-5`;
* `vendor`: a `tool` step calling `http.get_json` on the fake vendor: 503
  during the outage; breaker `host:127.0.0.1`.

Timeline of each case: half the runs are started, the outage begins 2 s
later and lasts `--outage-s`; the other half are started, evenly, over the
first half of the outage. The step's retry policy: 6 attempts, backoff
from 2 s doubling to 30 s with equal jitter (at most about 60 s of waiting
in all).

Each kind runs twice in the same run, with the same workload: with the
breakers at their defaults (`BOSUN_BREAKER_*`: open after 5 failures in
60 s, cool-down 10 s doubling to 30 s, one probe at a time, runs resume 20
a second), and as the baseline (`-baseline`, `BOSUN_BREAKERS=0`): every
run retries on its own, as the engine did before breakers.

It prints, per case: runs finished and dead-lettered, requests to the
other side during the outage (and the most the retry policy lets the runs
send: runs x 6 attempts), and the time from the recovery to the last run
finished. The last line is the machine-readable RESULT line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._engine_db import open_database  # noqa: E402
from bench.engine import (  # noqa: E402
    configure_env,
    say,
    setup_django,
    spawn_manage,
    stop_cluster,
)

MAX_ATTEMPTS = 6
TERMINAL = ("succeeded", "failed", "stopped", "cancelled")


RETRY_POLICY = {"max_attempts": MAX_ATTEMPTS, "backoff_base_s": 2, "backoff_cap_s": 30}


def workflow_spec(slug: str, kind: str, base_url: str) -> dict:
    """One model call (`llm`), or one call to a vendor's HTTP API (`vendor`:
    `http.get_json`, breaker `host:127.0.0.1`), then an end."""
    if kind == "llm":
        step = {
            "key": "call",
            "kind": "llm",
            "config": {
                "provider": "anthropic",
                "tier": "fast",
                "prompt": "Score lead {{ input.n }}",
                "output_schema": {
                    "type": "object",
                    "required": ["total"],
                    "properties": {"total": {"type": "number"}},
                },
            },
            "edges": {"next": "done", "escape": "done"},
        }
    else:
        step = {
            "key": "call",
            "kind": "tool",
            "config": {
                "tool": "http.get_json",
                "args": {"url": base_url + "/enrich/{{ input.n }}"},
            },
            "edges": {"next": "done"},
        }
    return {
        "name": f"Bench: one {kind} call ({slug})",
        "slug": slug,
        "entry_step": "call",
        "policy": {"destinations": {"http.get_json": ["*"]}},
        "steps": [
            {**step, **RETRY_POLICY, "timeout_s": 30},
            {"key": "done", "kind": "end", "config": {"outcome": "done"}},
        ],
    }


class FakeProvider:
    """The Messages API, as far as the bench needs it: a score, or a 529."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.down = False
        self.lock = threading.Lock()
        self.requests = 0
        self.during_outage = 0

    def answer(self, method: str) -> tuple[int, dict]:
        with self.lock:
            self.requests += 1
            if self.down:
                self.during_outage += 1
                if method == "GET":  # the vendor: 503
                    return 503, {"error": "service unavailable"}
                error = {"type": "overloaded_error", "message": "Overloaded"}
                return 529, {"type": "error", "error": error}
        time.sleep(self.latency_s)
        if method == "GET":
            return 200, {"company": "Acme", "employees": 120}
        block = {
            "type": "tool_use",
            "id": "toolu_bench",
            "name": "record_output",
            "input": {"total": 70},
        }
        return 200, {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5",
            "content": [block],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 200, "output_tokens": 20},
        }

    @contextlib.contextmanager
    def serve(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                self.reply(*fake.answer("GET"))

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.reply(*fake.answer("POST"))

            def reply(self, status: int, body: dict) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format, *args) -> None:  # noqa: A002
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


def _counts(ids: list[int]) -> dict[str, int]:
    from django.db.models import Count

    from runs.models import Run

    rows = Run.objects.filter(pk__in=ids).values_list("status").annotate(n=Count("id"))
    return {status: n for status, n in rows.values_list("status", "n")}


def measure(label: str, *, kind: str, breakers: bool, args, log_dir: str) -> dict:
    from django.conf import settings

    from demo.samples import install_workflow
    from policies.models import AuditEntry, Breaker
    from runs.engine import start_run
    from runs.models import Run, StepRun

    settings.BOSUN_DOORBELL = "runs.tasks.ring"  # start_run rings the queue, as in production
    Breaker.objects.all().delete()  # each case starts from closed breakers
    fake = FakeProvider(args.latency_s)
    first_audit = AuditEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0
    with fake.serve() as base_url, open(os.path.join(log_dir, f"{label}.log"), "w+") as log:
        version = install_workflow(workflow_spec(f"bench-outage-{label}", kind, base_url))
        env = {
            **os.environ,
            "BOSUN_DOORBELL": "runs.tasks.ring",
            "BOSUN_WORKERS": "2",
            "BOSUN_BREAKERS": "1" if breakers else "0",
            "ANTHROPIC_API_KEY": "sk-ant-bench",
            "ANTHROPIC_BASE_URL": base_url,
            "BOSUN_HTTP_ALLOWED_HOSTS": "127.0.0.1",
            "LOG_LEVEL": "INFO",  # the workers log each breaker transition
        }
        cluster, sweeper = (
            spawn_manage("worker", env=env, log=log),
            spawn_manage("sweeper", env=env, log=log),
        )
        ids: list[int] = []
        try:
            time.sleep(3)  # the cluster starts
            before = args.runs // 2
            t0 = time.monotonic()
            for n in range(before):
                ids.append(start_run(workflow=version.workflow, input={"n": n}).run.pk)
            time.sleep(max(0.0, t0 + 2 - time.monotonic()))
            fake.down, down_at = True, time.monotonic()
            say(f"  {label}: outage begins; {_counts(ids)}")
            during = args.runs - before
            spread = args.outage_s / 2
            for k in range(during):
                time.sleep(max(0.0, down_at + spread * k / during - time.monotonic()))
                ids.append(start_run(workflow=version.workflow, input={"n": before + k}).run.pk)
            while time.monotonic() < down_at + args.outage_s:
                time.sleep(0.5)
            fake.down, up_at, up_wall = False, time.monotonic(), time.time()
            requests_during = fake.during_outage
            say(f"  {label}: recovered; {_counts(ids)}, {requests_during} requests during it")
            deadline = up_at + args.drain_s
            while time.monotonic() < deadline:
                if not Run.objects.filter(pk__in=ids).exclude(status__in=TERMINAL).exists():
                    break
                time.sleep(0.2)
            done_at = time.monotonic()
        except BaseException:
            log.flush()
            log.seek(0)
            say("log (tail):\n" + "".join(log.readlines()[-30:]))
            raise
        finally:
            stop_cluster(cluster)
            stop_cluster(sweeper)
    runs = Run.objects.filter(pk__in=ids)
    last_finish = max(
        (run.finished_at for run in runs if run.finished_at is not None), default=None
    )
    closed = (
        AuditEntry.objects.filter(id__gt=first_audit, action="breaker.closed")
        .order_by("-id")
        .values_list("at", flat=True)
        .first()
    )
    transitions = list(
        AuditEntry.objects.filter(id__gt=first_audit, target_type="policies.breaker")
        .order_by("id")
        .values_list("action", flat=True)
    )
    return {
        "label": label,
        "runs": len(ids),
        "succeeded": runs.filter(status="succeeded").count(),
        "dead": runs.filter(dead_lettered_at__isnull=False).count(),
        "unfinished": runs.exclude(status__in=TERMINAL).count(),
        "requests_during": requests_during,
        "requests_total": fake.requests,
        "failed_attempts": StepRun.objects.filter(run__in=runs, status="failed").count(),
        "recovery_to_done_s": done_at - up_at,
        "recovery_to_closed_s": closed.timestamp() - up_wall if closed else None,
        "last_finish": last_finish,
        "transitions": transitions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--outage-s", type=float, default=120.0)
    parser.add_argument("--latency-s", type=float, default=0.1, help="a healthy answer's time")
    parser.add_argument("--drain-s", type=float, default=300.0, help="give up after this")
    parser.add_argument("--log-dir", default=None)
    parser.add_argument(
        "--cases",
        default="llm,llm-baseline,vendor,vendor-baseline",
        help="comma-separated, of: llm, llm-baseline, vendor, vendor-baseline",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="bosun-bench-outage-")
    os.makedirs(log_dir, exist_ok=True)
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        raise SystemExit("bench/outage.py needs a PostgreSQL DATABASE_URL")
    db = open_database(url, os.environ.get("BOSUN_BENCH_DB", "bosun_bench_outage"))
    os.chdir(ROOT)
    say(f"{db.create()}: migrating ...")
    results = []
    try:
        configure_env(db.env())
        setup_django()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        for label in args.cases.split(","):
            kind, _, baseline = label.partition("-")
            if kind not in ("llm", "vendor") or baseline not in ("", "baseline"):
                raise SystemExit(f"unknown case {label!r}")
            say(f"{label}: {args.runs} runs, a {args.outage_s:.0f} s outage ...")
            measure_args = {"kind": kind, "breakers": not baseline}
            results.append(measure(label, **measure_args, args=args, log_dir=log_dir))
    finally:
        from django.db import connections

        connections.close_all()
        with contextlib.suppress(Exception):
            db.drop()
    say("")
    ceiling = args.runs * MAX_ATTEMPTS
    for r in results:
        say(
            f"{r['label']}: {r['succeeded']} of {r['runs']} runs finished, {r['dead']} dead-lettered,"
            f" {r['unfinished']} unfinished; {r['requests_during']} requests to the other side during"
            f" the {args.outage_s:.0f} s outage ({r['requests_total']} in all; per-run retries"
            f" send at most {ceiling}); {r['failed_attempts']} failed attempts recorded;"
            f" recovery -> all runs finished {r['recovery_to_done_s']:.1f} s"
        )
        if r["transitions"]:
            say(f"  breaker: {' -> '.join(t.removeprefix('breaker.') for t in r['transitions'])}")
        if r["recovery_to_closed_s"] is not None:
            say(f"  recovery -> breaker closed by a probe {r['recovery_to_closed_s']:.1f} s")
    say(f"logs: {log_dir}")
    fields = []
    for r in results:
        name = r["label"].replace("-", "_")
        fields += [
            f"{name}_finished={r['succeeded']}",
            f"{name}_dead={r['dead']}",
            f"{name}_requests_during_outage={r['requests_during']}",
            f"{name}_recovery_to_done_s={r['recovery_to_done_s']:.1f}",
        ]
    say(f"RESULT runs={args.runs} outage_s={args.outage_s:.0f} " + " ".join(fields))
    return 0 if all(r["unfinished"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
