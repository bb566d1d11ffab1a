"""Settings of bench/economics.py and of the worker processes it starts:
the app's own settings, with the model answered and billed by the bench's
metered provider (bench/metered.py)."""

from config.settings import *  # noqa: F403
from config.settings import BOSUN_LLM_PROVIDERS

BOSUN_LLM_PROVIDERS = {**BOSUN_LLM_PROVIDERS, "metered": "bench.metered.MeteredProvider"}
BOSUN_DEFAULT_PROVIDER = "metered"
