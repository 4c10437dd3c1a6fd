"""Log lines that a stranger can cause, bounded: a flood must not become a log flood.

Some events are caused by whatever arrives: a datagram that does not parse, a
request refused on receipt, a response nobody asked for. Over UDP the source
address can be forged, so the per-source rate limit does not bound how many
such events an attacker causes: logging each one would let a garbage flood
fill the disk and drown the lines that matter. Each such event kind gets a
:class:`LogThrottle`: at most ``burst`` lines per ``interval``; beyond that
the events are only counted, and the next line that is written says how
many were left out (``suppressed``). Metrics that count such events (say
``conclave_stray_responses_dropped_total``) still count every one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

FLOOD_LOG_BURST: Final = 20
"""Lines of one kind written per :data:`FLOOD_LOG_INTERVAL` at most: enough to
see what a misbehaving peer sends, too few to matter on disk."""

FLOOD_LOG_INTERVAL: Final = 10.0
"""Seconds over which :data:`FLOOD_LOG_BURST` applies."""


class LogThrottle:
    """Decides whether one more line of its kind may be written now."""

    def __init__(
        self,
        burst: int = FLOOD_LOG_BURST,
        interval: float = FLOOD_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or interval <= 0:
            raise ValueError("burst must be >= 1 and interval > 0")
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._window_start = float("-inf")
        self._written = 0
        self._suppressed = 0

    def admit(self) -> int | None:
        """None: leave this line out (it is counted). Otherwise write it, with
        the returned number of lines left out since the last one written
        (0: none) as its ``suppressed`` field."""
        now = self.clock()
        if now - self._window_start >= self.interval:
            self._window_start, self._written = now, 0
        if self._written >= self.burst:
            self._suppressed += 1
            return None
        self._written += 1
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed
