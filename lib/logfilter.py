"""A logging filter that keeps personal data and secrets out of log output.

Attach it to handlers, not loggers: a logger's filters never see records
propagated up from child loggers, a handler's see them all.

    LOGGING = {
        "filters": {"redact": {"()": "lib.logfilter.RedactingFilter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["redact"]}},
    }
"""

from __future__ import annotations

import logging

from lib.screening import redact, redact_value

_FALLBACK = "[log message dropped: it could not be redacted]"
# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_traceback_formatter = logging.Formatter()


class RedactingFilter(logging.Filter):
    """Rewrites each record so that every handler downstream sees redacted text only.

    * The message is formatted once (`msg % args`), redacted and stored back in
      `record.msg`, and `record.args` is emptied, so a value passed as an
      argument (`log.info("lead %s", email)`) is redacted like one written into
      the message itself.
    * Exception and stack text are rendered, redacted and kept in
      `record.exc_text` / `record.stack_info`; `record.exc_info` is cleared,
      because a handler that re-renders the live exception would bypass
      redaction. Formatters print `exc_text` as usual.
    * String values passed with `extra=` are redacted too.

    The filter never drops a record and never raises: if redaction itself
    fails, the message is replaced by a fixed notice rather than leaked.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            _redact_record(record)
        except Exception:  # logging must never fail, nor leak, because of us
            record.msg, record.args = _FALLBACK, ()
            record.exc_info = record.exc_text = record.stack_info = None
        return True


def _redact_record(record: logging.LogRecord) -> None:
    record.msg = redact(_message(record))
    record.args = ()
    if record.exc_info:
        # Render before clearing; an earlier handler may already have cached it.
        record.exc_text = record.exc_text or _traceback_formatter.formatException(record.exc_info)
        record.exc_info = None
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    for name, value in list(record.__dict__.items()):
        if name in ("message", "asctime") or name not in _STANDARD_ATTRS:
            record.__dict__[name] = redact_value(value)


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad format string or an argument whose __str__ raises
        return f"{_safe_str(record.msg)} {_safe_str(record.args)}"


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"
