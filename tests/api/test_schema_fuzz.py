"""Property-based tests of the whole API against its own OpenAPI schema.

schemathesis generates requests for every operation (valid ones and
deliberately invalid ones, NUL bytes included) and sends them in process
through the WSGI app, authenticated with a key holding every scope. Each
answer must not be a server error, must be a status and a body the schema
declares, and an invalid request must be refused with a 4xx.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis import checks

from approvals.models import ApprovalRequest
from knowledge.models import EventType
from tests.api.conftest import END
from tests.conftest import waiting_for_review

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


@pytest.fixture
def full_key(make_key) -> str:
    return make_key()


@pytest.fixture
def same_connection():
    """Requests go through the raw WSGI app, whose request signals would
    close the test's database connection (it is inside the test's
    transaction); Django's own test client disconnects them the same way."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def some_data(db, make_workflow, make_source) -> None:
    """Something for the generated requests to find besides 404s."""
    version = make_workflow([END], slug="onboarding")
    make_source(version.workflow, slug="crm")
    waiting_for_review(make_workflow)
    assert ApprovalRequest.objects.exists()
    EventType.objects.create(name="outreach.paused")


# Served by the app itself (serving the schema touches no database).
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())
# The key is sent by the test itself (it is made per test, in the database);
# without this, a generated "missing Authorization" case would be sent
# with the key anyway and then blamed for being accepted.
schema.config.generation.update(with_security_parameters=False)


# About a minute on PostgreSQL (the stricter database: it refuses NUL in
# text and json, which SQLite stores) for 15 operations x 100 examples.
@pytest.mark.postgres_only
@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    # The same examples on every run, as far as the data allows.
    derandomize=True,
    # The key and the data are made once per operation, on purpose: they
    # are what every generated request works against.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_every_operation_conforms_to_the_schema(case, full_key, some_data, same_connection):
    case.call_and_validate(headers={"Authorization": f"Bearer {full_key}"}, checks=_checks(case))


def _checks(case) -> list:
    """A GET takes only a query string, which cannot carry a value's type:
    a generated object or list for a parameter is sent as text (or as the
    parameter repeated) that the schema may well allow, and the negative
    check then blames the API for accepting it (seen about once in ten runs).
    Bodies and paths are still held to it."""
    if case.method.upper() == "GET":
        return [check for check in CHECKS if check is not checks.negative_data_rejection]
    return CHECKS
