"""Garbage-collector pauses: keep them short and make them visible.

CPython's cyclic collector stops the event loop while it scans. A full
(generation 2) collection scans every tracked object, and a server that has
loaded its users, contact lists, privacy rules and bindings holds millions of
them: one full collection then blocks SIP traffic for hundreds of
milliseconds, which shows up as p99 latency.

What survives long enough to reach the oldest generation is mostly live
state (users, contact lists, bindings, the transactions of the last 32 s); a
full collection there finds next to nothing (the bench logs show 140-210 ms
pauses that collected 0 objects), because reference counting frees almost all
garbage. So:

* :func:`settle_heap`, once the start-up loading is done, collects once and
  *freezes* what survives (``gc.freeze()``), taking it out of later scans;
* :func:`tune_collector` makes the young collections rarer and stops the
  collector from starting full ones on its own;
* :func:`run_full_collections` runs one full collection every
  :data:`FULL_COLLECTION_INTERVAL` instead (cycles among long-lived objects
  wait at most that long to be freed);
* :class:`PauseWatch` times every collection, feeds
  ``conclave_gc_pause_seconds{generation}`` and logs a warning for any pause
  longer than :data:`SLOW_PAUSE`.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any, Final

import structlog
from prometheus_client import Histogram

from .metrics import REGISTRY

log = structlog.get_logger("conclave.gc")

SLOW_PAUSE: Final = 0.1
"""Seconds. A collection longer than this is logged: it is as long as the
whole latency budget of a request (the p99 target of 100 ms)."""

GC_PAUSE_SECONDS: Final = Histogram(
    "conclave_gc_pause_seconds",
    "Time the garbage collector stopped the process, per collection",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)


YOUNG_THRESHOLD: Final = 2_000
"""Net allocations between generation-0 collections (CPython's default is
700). The count is allocations minus deallocations, and a server under load
frees old objects (finished transactions, expired records) as fast as it
makes new ones, so the young generations hold several times this many
objects when a collection comes: with 10,000 a generation-1 collection
scanned over 200,000 objects (100-300 ms, measured on 30 s MESSAGE steps,
each pause answered as overload). With 2,000 no pause reached 100 ms and the
collector cost less CPU in all (0.76 against 0.87 of a core at 700
MESSAGE/s); with 700 there were more collections for no shorter pauses
(844 against 960 MESSAGE/s served at 1000/s offered)."""

MIDDLE_THRESHOLD: Final = 10
"""Generation-0 collections between generation-1 collections (the default):
a middle collection scans at most about ten young batches."""

NO_AUTOMATIC_FULL: Final = 1_000_000
"""Generation-1 collections before an automatic full one: never, in practice.
Full collections are run by :func:`run_full_collections` instead."""

FULL_COLLECTION_INTERVAL: Final = 600.0
"""Seconds between full collections: a pause of a few hundred milliseconds
every ten minutes touches far fewer than 1% of requests, while the default
schedule ran one every few seconds under load."""


def tune_collector() -> tuple[int, int, int]:
    """Young collections every :data:`YOUNG_THRESHOLD` allocations; no automatic full ones.

    Returns the previous thresholds, for ``gc.set_threshold(*previous)`` at stop.
    """
    previous = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, NO_AUTOMATIC_FULL)
    return previous


async def run_full_collections(interval: float = FULL_COLLECTION_INTERVAL) -> None:
    """One full collection every ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        gc.collect()


def settle_heap() -> int:
    """Collect once, then move every surviving object out of the collector's sight.

    Returns how many objects were frozen. Objects created later are collected
    as usual; frozen ones that become garbage are freed by reference counting
    (cycles among them stay until :func:`gc.unfreeze`, an accepted cost for
    start-up data that lives as long as the process).
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class PauseWatch:
    """Times collections through ``gc.callbacks``; :meth:`install` / :meth:`remove`."""

    def __init__(
        self, slow: float = SLOW_PAUSE, on_pause: Callable[[float], None] | None = None
    ) -> None:
        self.slow = slow
        self.on_pause = on_pause
        """Told every pause's length in seconds (overload control excuses the wait)."""
        self._started = 0.0
        self._children = [GC_PAUSE_SECONDS.labels(generation=str(g)) for g in range(3)]

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def remove(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = int(info.get("generation", 2))
        self._children[min(max(generation, 0), 2)].observe(pause)
        if self.on_pause is not None:
            self.on_pause(pause)
        if pause > self.slow:
            log.warning(
                "slow garbage collection",
                generation=generation,
                pause_ms=round(pause * 1000, 1),
                collected=info.get("collected"),
            )
