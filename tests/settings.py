"""Test settings: the real settings plus a small app of test-only tools."""
# ruff: noqa: F405

import os
from decimal import Decimal

os.environ.setdefault("DEBUG", "1")
# The sample vendors, workflows and demo history are part of what is tested.
os.environ.setdefault("BOSUN_DEMO", "1")

from config.settings import *  # noqa: E402,F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]  # noqa: F405
BOSUN_TOOLS = {
    **BOSUN_TOOLS,  # noqa: F405
    "test.count": "tests.testapp.tools.Count",
    "test.fail": "tests.testapp.tools.Fail",
    "test.fail_while": "tests.testapp.tools.FailWhile",
    "test.send": "tests.testapp.tools.Send",
    "test.hang_once_send": "tests.testapp.tools.HangOnceSend",
    "test.engage_switch": "tests.testapp.tools.EngageSwitch",
    "test.in_transaction": "tests.testapp.tools.InTransaction",
    "test.inflight": "tests.testapp.tools.InFlight",
    "test.page": "tests.testapp.tools.Page",
    "test.unsafe_send": "tests.testapp.tools.UnsafeSend",
    "test.metered": "tests.testapp.tools.Metered",
    "test.flaky": "tests.testapp.tools.Flaky",
}
# The vendor of `test.metered`, which reports its credits in its answers.
BOSUN_CREDIT_PRICES = {**BOSUN_CREDIT_PRICES, "meterco": Decimal("0.01")}  # noqa: F405
# A model priced so that one SequenceProvider reply (1000 input tokens)
# costs exactly $0.07: budgets are tested in round figures.
BOSUN_PRICES = {
    **BOSUN_PRICES,  # noqa: F405
    "test-priced": {"input": 70.0, "output": 0.0, "cache_read": 0.0, "cache_write": 0.0},
}
# Tests drive runs explicitly; the doorbell only records who was rung.
BOSUN_DOORBELL = os.environ.get("BOSUN_DOORBELL", "tests.testapp.bell.record")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
BOSUN_LLM_PROVIDERS = {
    **BOSUN_LLM_PROVIDERS,
    "sequence": "tests.testapp.providers.SequenceProvider",
    "obedient": "tests.testapp.providers.ObedientProvider",
    "tripping": "tests.testapp.providers.TrippingProvider",
}  # noqa: F405
# The test client's `login()` authenticates without a request, which the
# login lockout (django-axes) refuses; tests that exercise the lockout turn
# it on with the `settings` fixture.
AXES_ENABLED = False
