"""Logging: structured JSON or human console lines, with secrets masked on the way out.

Modules log through the standard ``logging`` module; structlog renders the lines. Nothing is
logged per row at INFO. Context: each role's thread is tagged (``source``/``role`` or ``sink``, see
:func:`bind_role`), and ``extra={...}`` fields of a call (position, entity, key) become fields of the line.
"""

from __future__ import annotations

import logging
import sys

import structlog

from cdc.domain.redact import redact_mapping


def _mask(_, __, event_dict):
    """Every text field of the line through the one redactor (:mod:`cdc.domain.redact`)."""
    return redact_mapping(event_dict)


def bind_role(role: str, source: str) -> None:
    """Tag every line the calling thread logs with its role: ``source=`` for the reader, ``sink=`` for a sink worker."""
    if role.startswith("sink:"):
        structlog.contextvars.bind_contextvars(sink=role[5:])
    else:
        structlog.contextvars.bind_contextvars(role=role, source=source)


def setup_logging(fmt: str = "console", level: str = "INFO") -> None:
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.ExtraAdder(),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _mask,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("pika", "urllib3", "opensearch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
