"""Bounded memos for pure functions of header text.

A dialog's From, To and Call-ID, a client's Contact, the top Via of a
transaction: the same strings reach the parser again and again (every
retransmission, every in-dialog request, several lookups per message).
:func:`memoised` remembers the result of a pure ``str -> value`` function
for the strings it has seen.

The text comes from the network, so a memo is bounded: when it holds
``limit`` entries it is emptied and starts again (cheaper than LRU
bookkeeping, and the entries that matter come back within a message or two).
Errors are never remembered. The results are *shared* between callers: a
memoised parser must return immutable values, or be documented as returning
objects that callers read and never modify.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import wraps
from typing import Protocol, TypeVar

V = TypeVar("V")
V_co = TypeVar("V_co", covariant=True)


class Memoised(Protocol[V_co]):
    """A memoised function; ``memo`` is its table, for a hot caller to read inline."""

    @property
    def memo(self) -> Mapping[str, V_co]: ...

    def __call__(self, text: str, /) -> V_co: ...


MAX_MEMO_TEXT = 512
"""Longer strings are computed every time, never remembered: with ``limit``
entries a memo holds at most ``limit * MAX_MEMO_TEXT`` characters of keys."""


def memoised(limit: int) -> Callable[[Callable[[str], V]], Memoised[V]]:
    """Decorate a pure function of one string with a memo of ``limit`` entries."""

    def decorate(function: Callable[[str], V]) -> Memoised[V]:
        memo: dict[str, V] = {}

        @wraps(function)
        def lookup(text: str) -> V:
            try:
                return memo[text]
            except KeyError:
                pass
            value = function(text)
            if len(text) > MAX_MEMO_TEXT:
                return value
            if len(memo) >= limit:
                memo.clear()
            memo[text] = value
            return value

        lookup.memo = memo  # type: ignore[attr-defined]
        return lookup  # type: ignore[return-value]

    return decorate
