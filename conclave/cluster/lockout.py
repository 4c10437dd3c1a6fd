"""One account lockout for the whole pool (and for a host's workers).

Every member counts failed sign-ins in memory
(:class:`~conclave.core.lockout.AccountLockout`); without sharing, a password
guesser spread over N members (or over the N workers the kernel hands its
connections to) would get N times the attempts before an account locks. So
each member publishes what the others must apply (a failure, a reset, a
success that forgives failures or makes an address familiar) as an event of
topic ``lock`` on the pool's channel, and applies theirs:
``lock <kind> <now> <seq> <user> <source>``.

Events are sent with the member's queued writes (nothing on the sign-in path
waits on Redis). While Redis is down each member counts alone, as before
sharing; what it counted is not replayed later.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Protocol

import structlog

from .state import PoolState

log = structlog.get_logger("conclave.cluster")

TOPIC = "lock"
KINDS = frozenset({"failure", "success", "reset"})
MAX_EVENT_USER = 256
"""Longest user name an event may carry (a longer one is not a user of ours)."""


class Lockout(Protocol):
    """What this module needs of :class:`~conclave.core.lockout.AccountLockout`."""

    observer: Callable[[str, str, str, float], None] | None

    def failure(self, user: str, source: str, now: float, *, shared: bool = True) -> object: ...

    def success(self, user: str, source: str, now: float, *, shared: bool = True) -> None: ...

    def reset(self, user: str, now: float, *, shared: bool = True) -> bool: ...


class SharedLockout:
    """Publishes this member's lockout news and applies the other members'."""

    def __init__(
        self,
        state: PoolState,
        lockout: Lockout,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.state = state
        self.lockout = lockout
        self.on_change = on_change
        """Called after another member's news changed the state (to save it)."""
        self._seq = itertools.count()
        lockout.observer = self.publish
        state.on_event(TOPIC, self._apply)

    def publish(self, kind: str, user: str, source: str, now: float) -> None:
        if " " in user or " " in source or len(user) > MAX_EVENT_USER:
            return  # not a name the registrar accepts; nothing to share
        key = f"{kind} {now!r} {next(self._seq)} {user} {source or '-'}"
        self.state.write(_nothing, (TOPIC, key))

    async def _apply(self, member: str, key: str) -> None:
        parts = key.split(" ")
        if len(parts) != 5 or parts[0] not in KINDS or len(parts[3]) > MAX_EVENT_USER:
            log.warning("pool lockout event ignored", member=member, event=key[:120])
            return
        kind, when, _seq, user, source = parts
        try:
            now = float(when)
        except ValueError:
            log.warning("pool lockout event ignored", member=member, event=key[:120])
            return
        if kind == "failure":
            locked = self.lockout.failure(user, source, now, shared=False)
            if locked is not None:
                log.info("account locked at another member", user=user, member=member)
        elif kind == "success":
            self.lockout.success(user, source, now, shared=False)
        else:
            was_locked = self.lockout.reset(user, now, shared=False)
            log.info(
                "account unlocked at another member",
                user=user,
                member=member,
                was_locked=was_locked,
            )
        if self.on_change is not None and kind != "success":
            self.on_change()


def _nothing(_pipe: object) -> None:
    """An event with no write of its own."""
