"""email.send through Django's email backend (locmem under pytest-django)."""

from __future__ import annotations

import smtplib
import socket

import pytest
from django.core import mail
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend
from pydantic import ValidationError

from runs.tools.base import ToolError
from runs.tools.mail import SendEmail, message_id_for
from tests.tools import tool_call


class DroppingBackend(LocmemBackend):
    """Connects, then loses the connection in the middle of the send."""

    def send_messages(self, messages):
        raise smtplib.SMTPServerDisconnected("connection unexpectedly closed")


class RefusingBackend(LocmemBackend):
    def send_messages(self, messages):
        raise smtplib.SMTPDataError(451, b"try again later")


def send(key: str = "bosun-run-12-seq-5", **overrides):
    tool = SendEmail()
    args = {"to": ["ada@example.com"], "subject": "Hello", "body": "Hi Ada", **overrides}
    return tool.run(tool.Args(**args), tool_call(key))


def test_it_sends_one_message_whose_message_id_comes_from_the_key(settings):
    settings.DEFAULT_FROM_EMAIL = "Bosun <bosun@ops.example.com>"
    result = send(to=[" ada@example.com ", "ben@example.org"])
    (message,) = mail.outbox
    assert message.to == ["ada@example.com", "ben@example.org"] and result.to == message.to
    assert (
        message.message()["Message-ID"] == result.message_id == message_id_for("bosun-run-12-seq-5")
    )
    assert result.message_id.startswith("<bosun-run-12-seq-5.")
    assert result.message_id.endswith("@ops.example.com>")
    assert message.from_email == "Bosun <bosun@ops.example.com>"


def test_the_message_id_is_stable_per_key_and_differs_between_keys():
    assert message_id_for("bosun-run-1-seq-1") == message_id_for("bosun-run-1-seq-1")
    assert message_id_for("bosun-run-1-seq-1") != message_id_for("bosun-run-1-seq-2")


@pytest.mark.parametrize(
    "bad",
    [
        {"to": ["not-an-address"]},
        {"to": ["a@example.com, b@evil.example"]},
        {"to": ["Ada <ada@example.com>"]},
        {"to": []},
        {"subject": "Hello\nBcc: everyone@example.com"},
    ],
)
def test_bad_addresses_and_header_tricks_are_refused_by_the_arguments(bad):
    with pytest.raises(ValidationError):
        SendEmail.Args(**{"to": ["ada@example.com"], "subject": "Hi", "body": "x", **bad})


def test_a_mail_server_that_cannot_be_reached_is_retryable_and_nothing_was_sent(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        settings.EMAIL_HOST, settings.EMAIL_PORT = probe.getsockname()
    with pytest.raises(ToolError) as failed:
        send()
    assert failed.value.retryable is True and failed.value.outcome_unknown is False


def test_a_connection_lost_while_sending_is_an_unknown_outcome(settings):
    settings.EMAIL_BACKEND = "tests.tools.test_mail.DroppingBackend"
    with pytest.raises(ToolError) as lost:
        send()
    assert lost.value.outcome_unknown is True
    assert message_id_for("bosun-run-12-seq-5") in str(lost.value)  # for the human reconciling


def test_a_temporary_refusal_by_the_server_is_retryable_and_known(settings):
    settings.EMAIL_BACKEND = "tests.tools.test_mail.RefusingBackend"
    with pytest.raises(ToolError) as refused:
        send()
    assert refused.value.retryable is True and refused.value.outcome_unknown is False
