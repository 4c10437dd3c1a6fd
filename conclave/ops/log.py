"""Structured JSON logging for every role.

Each line on stderr is one JSON object with at least ``time`` (UTC, ISO
8601), ``level``, ``event``, ``host`` and ``role``. The SIP stack binds
``call_id`` (and ``user`` once known) for the duration of each request, so
every line written while handling it is correlated without passing loggers
around. Services that know a conversation bind ``conversation_id`` the same way.
``host`` and ``role`` always name this server: an event's own ``host`` (a
listener's bound address, say) is kept as ``address``.

Every event also passes through the *sink* (:func:`set_sink`), after the
common fields are added and before rendering: the logging agent
(:mod:`conclave.ops.agent`) installs itself there to forward AlwaysOn and
debug events to the logging controller. The sink gets a copy and must not
block; an exception in it never stops the line reaching stderr.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


_RENAMED = {"host": "address"}
"""Where an event's own value for a common field goes (the common field wins)."""

Sink = Callable[[Mapping[str, Any]], None]
_sink: Sink | None = None


def set_sink(sink: Sink | None) -> Sink | None:
    """Send a copy of every event to ``sink`` (None: stop); returns the previous one."""
    global _sink
    previous, _sink = _sink, sink
    return previous


def _to_sink(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    sink = _sink
    if sink is not None:
        # Logging must never fail because forwarding did.
        with contextlib.suppress(Exception):
            sink(dict(event))
    return event


def configure(
    *,
    level: str = "info",
    role: str = "standard",
    host: str | None = None,
    worker: int | None = None,
) -> None:
    """Install the JSON renderer. Safe to call more than once. ``worker``: which of
    the host's Front End processes this is (``serve --workers N``), on every line."""
    static: dict[str, Any] = {"host": host or socket.gethostname(), "role": role}
    if worker is not None:
        static["worker"] = worker

    def add_static(
        _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in static.items():
            own = event.get(key)
            if own is not None and own != value:
                # e.g. a listener's bound address logged as host=: the event
                # must still name the server it came from (search relies on it).
                event.setdefault(_RENAMED.get(key, f"{key}_field"), own)
            event[key] = value
        return event

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
            add_static,
            structlog.processors.format_exc_info,
            _to_sink,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get(name: str) -> Any:
    """A bound logger; ``name`` becomes the ``logger`` key."""
    return structlog.get_logger(name).bind(logger=name)


def log_loop_errors() -> None:
    """Send the running event loop's unhandled errors (an exception in a callback,
    a task that failed with nobody awaiting it) to the structured log, which the
    default handler would print to stderr as plain text that no log reader parses."""
    import asyncio

    logger = structlog.get_logger("conclave.loop")

    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        logger.error(
            "unhandled error",
            reason=str(context.get("message", "")),
            error=None if exc is None else f"{type(exc).__name__}: {exc}",
            exc_info=exc if isinstance(exc, BaseException) else None,
        )

    asyncio.get_running_loop().set_exception_handler(handler)
