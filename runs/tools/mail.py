"""`email.send`: one message through Django's configured email backend.

SMTP has no idempotency, so the tool is `write_unsafe`: after a failure
with the outcome unknown the run waits for a human. To make that human's
job possible, the message's `Message-ID` is derived from the call's
idempotency key (`message_id_for`): search the mailbox for it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import smtplib

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from pydantic import BaseModel, Field, field_validator

from lib import destinations
from runs.tools.base import Tool, ToolCall, ToolError

log = logging.getLogger(__name__)

# Deliberately simple (email-validator is not a dependency): one @, no
# spaces, commas, quotes or angle brackets (no header tricks), a dot in the
# domain.
_EMAIL = re.compile(r"^[^@\s,;<>\"()\[\]\\]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


def message_id_for(idempotency_key: str) -> str:
    """The Message-ID an `email.send` call with this key carries."""
    readable = re.sub(r"[^A-Za-z0-9.-]", "-", idempotency_key)[:100]
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:12]
    domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2].strip(" >") or "bosun.invalid"
    return f"<{readable}.{digest}@{domain}>"


class SendEmail(Tool):
    name = "email.send"
    description = "Send an email through the configured mail server."
    side_effect = "write_unsafe"
    risk = "high"
    egress = True
    limit_keys = ("email:smtp",)

    class Args(BaseModel):
        to: list[str] = Field(min_length=1, max_length=50)
        subject: str = Field(min_length=1, max_length=300)
        body: str = Field(max_length=100_000)

        @field_validator("to")
        @classmethod
        def _addresses(cls, value: list[str]) -> list[str]:
            cleaned = [address.strip() for address in value]
            bad = [address for address in cleaned if not _EMAIL.match(address)]
            if bad:
                raise ValueError(f"not email addresses: {', '.join(bad)}")
            return cleaned

        @field_validator("subject")
        @classmethod
        def _one_line(cls, value: str) -> str:
            if "\n" in value or "\r" in value:
                raise ValueError("the subject must be one line")
            return value

    class Result(BaseModel):
        message_id: str
        to: list[str]

    def destinations(self, args: Args) -> tuple[str, ...]:
        return tuple(destinations.email(address) for address in args.to)

    def stub(self, args: Args) -> Result:
        # No key was issued for a call that is not made: a Message-ID no
        # mailbox holds, marked as such.
        return self.Result(message_id="<not-sent@bosun.invalid>", to=args.to)

    def run(self, args: Args, call: ToolCall) -> Result:
        message_id = message_id_for(call.idempotency_key)
        connection = get_connection(fail_silently=False, timeout=call.timeout_s)
        message = EmailMessage(
            subject=args.subject,
            body=args.body,
            to=args.to,
            headers={"Message-ID": message_id},
            connection=connection,
        )
        try:
            connection.open()
        except (OSError, smtplib.SMTPException) as exc:
            # Nothing was handed over: trying again cannot send twice.
            raise ToolError(f"mail server unavailable: {exc}", retryable=True) from None
        try:
            sent = connection.send_messages([message])
        except smtplib.SMTPRecipientsRefused as exc:
            raise ToolError(f"recipients refused: {exc}", retryable=False) from None
        except smtplib.SMTPResponseException as exc:
            # The server answered with an error code: it did not take the
            # message. 4xx is temporary.
            raise ToolError(
                f"mail server refused the message: {exc.smtp_code} {exc.smtp_error!r}",
                retryable=400 <= exc.smtp_code < 500,
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            # The server may have taken it. Retryable so the run goes back to
            # the gate, whose ledger turns the retry into a reconciliation by
            # a person, never a second send.
            raise ToolError(
                f"the connection failed while sending {message_id}: {exc}",
                retryable=True,
                outcome_unknown=True,
            ) from None
        finally:
            try:
                connection.close()
            except (OSError, smtplib.SMTPException):  # the message is already handed over
                log.warning("closing the mail connection failed", exc_info=True)
        if sent != 1:
            raise ToolError(f"the mail backend did not send {message_id}", retryable=False)
        return self.Result(message_id=message_id, to=args.to)
