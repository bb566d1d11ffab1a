"""Settings come from the environment and fail loudly on bad values."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_settings(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DEBUG")}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import config.settings as s; print(s.DATABASES['default']['ENGINE'])",
        ],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_sqlite_is_the_default_database(tmp_path):
    result = load_settings(DEBUG="1", BOSUN_VAR_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "django.db.backends.sqlite3"


def test_database_url_selects_postgresql():
    result = load_settings(DEBUG="1", DATABASE_URL="postgresql://u:p@127.0.0.1:5432/db")
    assert result.stdout.strip() == "django.db.backends.postgresql", result.stderr


def test_a_malformed_value_fails_at_start_up():
    result = load_settings(DEBUG="maybe")
    assert result.returncode != 0 and "DEBUG must be a boolean" in result.stderr
    result = load_settings(DEBUG="1", BOSUN_WORKERS="many")
    assert result.returncode != 0 and "BOSUN_WORKERS must be an integer" in result.stderr


def test_production_refuses_to_start_without_a_secret_key():
    result = load_settings(DEBUG="0")
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


def test_a_malformed_price_table_fails_at_start_up():
    cases = {
        "BOSUN_TOOL_PRICES=not json": ("BOSUN_TOOL_PRICES must be a JSON object",),
        'BOSUN_TOOL_PRICES={"x.y": {"credits": 2}}': ("credits need the vendor",),
        'BOSUN_TOOL_PRICES={"x.y": {"vendor": "acme", "credits": 2}}': (
            "BOSUN_CREDIT_PRICES does not price",
        ),
        'BOSUN_TOOL_PRICES={"x.y": {"usd": "-1"}}': ("usd must be an amount",),
        "BOSUN_CREDIT_PRICES=acme=cheap": ("entries look like enrichco=0.02",),
        "BOSUN_MAX_CREDITS=acme=1.5": ("entries look like enrichco=500",),
    }
    for setting, (message,) in cases.items():
        name, _, value = setting.partition("=")
        result = load_settings(DEBUG="1", **{name: value})
        assert result.returncode != 0 and message in result.stderr, setting


def test_a_price_table_in_the_environment_prices_its_credits():
    result = load_settings(
        DEBUG="1",
        BOSUN_TOOL_PRICES='{"x.y": {"vendor": "acme", "credits": 2, "usd": "0.5"}}',
        BOSUN_CREDIT_PRICES="acme=0.25",
    )
    assert result.returncode == 0, result.stderr


def test_a_queue_name_nobody_submits_to_fails_at_start_up():
    """A worker started with Q_CLUSTER_NAME=elsewhere would take no run."""
    result = load_settings(Q_CLUSTER_NAME="elsewhere", DEBUG="1")
    assert result.returncode != 0
    assert "Q_CLUSTER_NAME='elsewhere' names no queue" in result.stderr
    assert "runs are submitted to 'bosun'" in result.stderr
