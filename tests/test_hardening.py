"""Production hardening: deploy checks, secure cookies, body limits, login lockout."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from wsgiref.util import is_hop_by_hop

import pytest
from django.urls import reverse
from django.utils import timezone

ROOT = Path(__file__).resolve().parent.parent
LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The variables a production deployment sets (see the README)."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return {
        **keep,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "bosun.example.com",
        "BOSUN_VAR_DIR": str(tmp_path),
        **extra,
    }


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def settings_in(env: dict[str, str], *names: str) -> list[str]:
    code = "from django.conf import settings\n" + "".join(
        f"print(repr(settings.{name}))\n" for name in names
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[: len(names)]


# --- deploy checks and settings ---------------------------------------------------


def test_production_settings_pass_the_deploy_check_with_no_warning(tmp_path):
    result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_the_deploy_check_does_fail_on_an_unsafe_override(tmp_path):
    env = production_env(tmp_path, SECURE_SSL_REDIRECT="false", SESSION_COOKIE_SECURE="0")
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W008" in result.stderr and "security.W012" in result.stderr


def test_the_local_demo_on_plain_http_gets_no_https_only_settings(tmp_path):
    env = {**production_env(tmp_path), "DEBUG": "1"}
    names = ("SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SESSION_COOKIE_SECURE")
    assert settings_in(env, *names) == ["False", "0", "False"]
    assert settings_in(production_env(tmp_path), *names) == ["True", "31536000", "True"]


def test_cookies_are_http_only_and_the_lockout_is_configurable(tmp_path):
    env = production_env(tmp_path, AXES_FAILURE_LIMIT="3", AXES_COOLOFF_MINUTES="30")
    names = (
        "SESSION_COOKIE_HTTPONLY",
        "CSRF_COOKIE_HTTPONLY",
        "CSRF_COOKIE_SECURE",
        "AXES_FAILURE_LIMIT",
        "AXES_COOLOFF_TIME",
    )
    assert settings_in(env, *names) == [
        "True",
        "True",
        "True",
        "3",
        "datetime.timedelta(seconds=1800)",
    ]


def test_a_malformed_proxy_header_setting_stops_start_up(tmp_path):
    env = production_env(tmp_path, SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO")
    result = manage(env, "check")
    assert result.returncode != 0 and "SECURE_PROXY_SSL_HEADER" in result.stderr


# --- request size -------------------------------------------------------------------


@pytest.fixture
def small_limit(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    return 1000


@pytest.mark.django_db
def test_an_oversized_api_body_gets_413_in_the_api_error_shape(client, small_limit):
    body = '{"workflow": "x", "input": {"blob": "' + "a" * small_limit + '"}}'
    response = client.post("/api/v1/runs", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {
        "error": f"the request body is larger than {small_limit} bytes",
        "code": "payload_too_large",
    }


@pytest.mark.django_db
def test_a_413_carries_no_hop_by_hop_header(client, small_limit):
    for url in ("/api/v1/runs", LOGIN):
        response = client.post(url, "a" * (small_limit + 1), content_type="application/json")
        assert response.status_code == 413
        assert [name for name in response.headers if is_hop_by_hop(name)] == []


@pytest.fixture
def wsgi_server() -> Iterator[str]:
    """The project behind the server `runserver` runs (Django's, on wsgiref,
    which refuses a hop-by-hop header from the application with a 500), in
    a thread, on a free port; its address."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

    server = ThreadedWSGIServer(("127.0.0.1", 0), WSGIRequestHandler, allow_reuse_address=False)
    server.set_app(WSGIHandler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.mark.parametrize(
    ("url", "answered_as"), [("/api/v1/runs", "application/json"), (LOGIN, "text/plain")]
)
def test_a_real_wsgi_server_answers_an_oversized_body_with_413(
    wsgi_server, small_limit, url, answered_as
):
    connection = http.client.HTTPConnection(wsgi_server, timeout=10)
    body = b'{"blob": "' + b"a" * small_limit + b'"}'
    connection.request("POST", url, body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    content = response.read()
    connection.close()
    assert response.status == 413, content[:500]
    assert response.getheader("Content-Type", "").startswith(answered_as)
    if answered_as == "application/json":
        assert json.loads(content)["code"] == "payload_too_large"


@pytest.mark.django_db
def test_a_body_within_the_limit_reaches_the_api(client, small_limit):
    response = client.post("/api/v1/runs", '{"workflow": "x"}', content_type="application/json")
    assert response.status_code == 401  # no key: the API itself answered


@pytest.mark.django_db
def test_an_oversized_form_gets_413_too(client, small_limit):
    response = client.post(LOGIN, {"username": "a" * small_limit, "password": "x"})
    assert response.status_code == 413
    assert response["Content-Type"].startswith("text/plain")


# --- login lockout --------------------------------------------------------------------


@pytest.fixture
def lockout(settings):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 5
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    return settings


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def fail(client, url: str, username: str, times: int, **extra) -> list[int]:
    return [
        client.post(url, {"username": username, "password": "wrong"}, **extra).status_code
        for _ in range(times)
    ]


@pytest.mark.django_db
def test_the_sixth_login_is_locked_out_even_with_the_right_password(client, make_user, lockout):
    ana = make_user("operator", username="ana")
    assert fail(client, LOGIN, "ana", 4) == [200, 200, 200, 200]
    assert fail(client, LOGIN, "ana", 1) == [429]  # the fifth failure locks
    response = client.post(LOGIN, {"username": "ana", "password": "pw"})
    assert response.status_code == 429 and not logged_in(client)
    text = response.content.decode()
    assert "Too many failed logins" in text and "locked for 15 minutes" in text
    assert 'value="ana"' in text and 'name="csrfmiddlewaretoken"' in text
    assert response["Retry-After"] == "900"
    assert ana.is_active


@pytest.mark.django_db
def test_admin_and_console_logins_share_one_count(client, make_user, lockout):
    make_user(superuser=True, username="root")
    assert fail(client, ADMIN_LOGIN, "root", 3) == [200, 200, 200]
    assert fail(client, LOGIN, "root", 2) == [200, 429]
    response = client.post(ADMIN_LOGIN, {"username": "root", "password": "pw"})
    assert response.status_code == 429 and not logged_in(client)
    assert "Too many failed logins" in response.content.decode()


@pytest.mark.django_db
def test_the_lockout_is_per_username_and_address(client, make_user, lockout):
    make_user("viewer", username="ana")
    make_user("viewer", username="bo")
    fail(client, LOGIN, "ana", 5)
    response = client.post(LOGIN, {"username": "bo", "password": "pw"})
    assert response.status_code == 302 and logged_in(client)
    client.logout()
    other = {"REMOTE_ADDR": "10.0.0.7"}
    response = client.post(LOGIN, {"username": "ana", "password": "pw"}, **other)
    assert response.status_code == 302 and logged_in(client)


@pytest.mark.django_db
def test_the_lockout_ends_after_the_cool_off(client, make_user, lockout):
    from axes.models import AccessAttempt

    make_user("viewer", username="ana")
    fail(client, LOGIN, "ana", 5)
    assert client.post(LOGIN, {"username": "ana", "password": "pw"}).status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    response = client.post(LOGIN, {"username": "ana", "password": "pw"})
    assert response.status_code == 302 and logged_in(client)


@pytest.mark.django_db
def test_behind_a_proxy_the_forwarded_client_address_is_counted(client, make_user, lockout):
    lockout.BOSUN_PROXY_COUNT = 1
    make_user("viewer", username="ana")
    first = {"HTTP_X_FORWARDED_FOR": "203.0.113.5"}
    fail(client, LOGIN, "ana", 5, **first)
    # The same client, lying about an earlier hop, is still itself.
    spoofed = {"HTTP_X_FORWARDED_FOR": "198.51.100.1, 203.0.113.5"}
    assert client.post(LOGIN, {"username": "ana", "password": "pw"}, **spoofed).status_code == 429
    # Another client behind the same proxy is not locked out.
    second = {"HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    response = client.post(LOGIN, {"username": "ana", "password": "pw"}, **second)
    assert response.status_code == 302


@pytest.mark.django_db
def test_test_client_logins_keep_working_under_the_test_settings(client, make_user):
    make_user("viewer", username="ana")
    assert client.login(username="ana", password="pw")
    assert client.get(reverse("admin:index")).status_code == 200
