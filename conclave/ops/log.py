"""Structured JSON logging for every role.

Each line on stderr is one JSON object with at least ``time`` (UTC, ISO
8601), ``level``, ``event``, ``host`` and ``role``. The SIP stack binds
``call_id`` (and ``user`` once known) for the duration of each request, so
every line written while handling it is correlated without passing loggers
around.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(*, level: str = "info", role: str = "standard", host: str | None = None) -> None:
    """Install the JSON renderer. Safe to call more than once."""
    static = {"host": host or socket.gethostname(), "role": role}

    def add_static(
        _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in static.items():
            event.setdefault(key, value)
        return event

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
            add_static,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get(name: str) -> Any:
    """A bound logger; ``name`` becomes the ``logger`` key."""
    return structlog.get_logger(name).bind(logger=name)
