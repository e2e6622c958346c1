"""Structured logs: JSON off a terminal, readable on one, with personal data redacted.

Every line carries run_id, customer and connector where known (bound through
structlog's contextvars). The redaction processor is the last line of defence: the code
logs ids, counts and field names only, and the processor removes anything that still
looks like an e-mail address or a phone number, and the values of keys that hold names.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO, cast

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

EMAIL = re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
# Eight or more digits, possibly with +, spaces, dots, dashes or brackets between them,
# not inside a longer word (ids and hashes are not phone numbers).
PHONE = re.compile(r"(?<![\w-])\+?\(?\d(?:[\s().-]{0,2}\d){7,}(?![\w-])")
PERSONAL_KEYS = frozenset(
    {
        "given_name",
        "family_name",
        "display_name",
        "name",
        "names",
        "title",
        "department",
        "email",
        "emails",
        "phone",
        "phones",
        "notes",
        "instructions",
        "values",
        "value",
        "identifiers",
        "subject",
    }
)
SAFE_KEYS = frozenset(
    {"timestamp", "level", "logger", "run_id", "request_id", "op_id", "link", "link_id"}
)


def redact_text(text: str) -> str:
    return PHONE.sub("[phone]", EMAIL.sub("[email]", text))


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: "[redacted]" if k in PERSONAL_KEYS else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(v) for v in value]
    return value


def redact_personal_data(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """structlog processor: no e-mail, phone number or name leaves in a log line."""
    for key in list(event_dict):
        if key in SAFE_KEYS:
            continue
        if key in PERSONAL_KEYS:
            event_dict[key] = "[redacted]"
        else:
            event_dict[key] = _redact(event_dict[key])
    return event_dict


class _Stderr:
    """Whatever `sys.stderr` is when a line is written, not when logging was set up: a
    live progress bar (rich) swaps it for a proxy that prints lines above the bar, so log
    lines no longer cut through it; under pytest it is the capture of the moment."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def _drop_color_message(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    # uvicorn passes a copy of each message with ANSI colour codes as `extra`; the plain
    # one is the event already.
    event_dict.pop("color_message", None)
    return event_dict


# Libraries whose lines say nothing an operator acts on below a warning: request URLs
# (they can carry search terms; the connectors log what matters themselves), Alembic's
# "Context impl SQLiteImpl." / "Running upgrade ..." on every open of the store, and
# uvicorn's start-up chatter.
QUIET_LIBRARIES = (
    "httpx",
    "httpcore",
    "hpack",
    "google",
    "grpc",
    "urllib3",
    "apscheduler",
    "alembic",
    "uvicorn",
    "multipart",
)


def configure(
    *,
    format: str = "auto",
    level: str = "info",
    stream: TextIO | None = None,
    command: bool = False,
) -> None:
    """Set up structlog and route the standard library's logging through the same chain.

    `command`: a one-shot command a person reads, whose own output says what happened:
    at level info only warnings and errors are logged (a sync's per-read lines would
    otherwise run ahead of its table); debug still shows everything. The daemon logs
    at the configured level.
    """
    stream = stream or cast(TextIO, _Stderr())
    as_json = format == "json" or (format == "auto" and not stream.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,
        redact_personal_data,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    if command and numeric == logging.INFO:
        numeric = logging.WARNING
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                _drop_color_message,
                *shared,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


def bind(**values: Any) -> None:
    structlog.contextvars.bind_contextvars(**values)


def unbind(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)


def scrub(mapping: MutableMapping[str, Any]) -> dict[str, Any]:
    """A copy of `mapping` fit for the store's run events: redacted like a log line."""
    return dict(redact_personal_data(None, "", dict(mapping)))
