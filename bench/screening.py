"""Screening benchmark: how long PII redaction and injection screening take.

    .venv/bin/python -m bench.screening            # about 10 s

What it measures, single process, no Django:

* corpus: mean microseconds per text for `redact` and `injection_signals` over
  the three test corpora (tests/data/*.jsonl), i.e. log-line to paragraph sized
  text, repeated until each figure rests on at least one second of work.
* large: one 100 KB input of several shapes (prose, digit groups, base64,
  e-mail addresses, phone numbers), the sizes a scraped web page or a CRM
  export reaches, to show that no pattern goes quadratic.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

from lib.screening import injection_signals, redact

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def per_call_us(fn: Callable[[str], object], texts: list[str], min_seconds: float = 1.0) -> float:
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds:
        for text in texts:
            fn(text)
        calls += len(texts)
    return elapsed / calls * 1e6


def large_inputs() -> dict[str, str]:
    rng = random.Random(7)
    return {
        "prose": "The quarterly review covered churn, pricing and onboarding. " * 1700,
        "digit groups": " ".join(str(rng.randint(1000, 9999)) for _ in range(20000)),
        "base64 blob": base64.b64encode(rng.randbytes(75000)).decode(),
        "emails": "contact jane.doe@example.com or sales@acme.io; " * 2100,
        "phones": "call +1 212 555 0143 or 030 12345678; " * 2600,
    }


def main() -> None:
    for name in ("pii_corpus", "injection_corpus", "benign_corpus"):
        with open(DATA / f"{name}.jsonl", encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f]
        print(
            f"{name:17} {len(texts):4} texts  redact {per_call_us(redact, texts):8.1f} us/text"
            f"  injection_signals {per_call_us(injection_signals, texts):8.1f} us/text"
        )
    for name, text in large_inputs().items():
        t0 = time.perf_counter()
        redact(text)
        t1 = time.perf_counter()
        injection_signals(text)
        t2 = time.perf_counter()
        print(
            f"large {name:12} {len(text) // 1000:4} KB  redact {(t1 - t0) * 1e3:7.1f} ms"
            f"  injection_signals {(t2 - t1) * 1e3:7.1f} ms"
        )


if __name__ == "__main__":
    main()
