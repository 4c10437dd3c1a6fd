"""One heap of deadlines for every presence timer (publication and subscription expiry).

A timer is a hashable key with a deadline. Re-scheduling a key replaces its
deadline; cancelling forgets it. Stale heap entries are skipped when popped
(lazy deletion, as the transaction layer's timer heap does), so every
operation is O(log n) and one asyncio timer serves them all: the service
asks :meth:`Deadlines.next` and sleeps until then. Time is whatever the
caller passes as ``now``; nothing here reads a clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable


class Deadlines:
    """Keys with deadlines; :meth:`due` hands out (and forgets) the expired ones."""

    def __init__(self) -> None:
        self._at: dict[Hashable, float] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._seq = itertools.count()

    def schedule(self, key: Hashable, at: float) -> None:
        """Fire ``key`` at ``at`` (replacing any deadline it had)."""
        self._at[key] = at
        heapq.heappush(self._heap, (at, next(self._seq), key))
        if len(self._heap) > 64 and len(self._heap) > 4 * len(self._at):
            self._compact()

    def cancel(self, key: Hashable) -> None:
        self._at.pop(key, None)

    def deadline(self, key: Hashable) -> float | None:
        return self._at.get(key)

    def next(self) -> float | None:
        """The earliest live deadline, or None."""
        heap = self._heap
        while heap:
            at, _, key = heap[0]
            if self._at.get(key) == at:
                return at
            heapq.heappop(heap)
        return None

    def due(self, now: float) -> list[Hashable]:
        """Every key whose deadline is at or before ``now``, earliest first; they are forgotten."""
        out: list[Hashable] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, key = heapq.heappop(heap)
            if self._at.get(key) == at:
                del self._at[key]
                out.append(key)
        return out

    def __len__(self) -> int:
        return len(self._at)

    def _compact(self) -> None:
        self._heap = [entry for entry in self._heap if self._at.get(entry[2]) == entry[0]]
        heapq.heapify(self._heap)
