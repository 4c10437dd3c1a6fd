"""Account lockout that outsiders cannot turn against a user ("smart lockout").

Per-source bans (:class:`~conclave.transport.guard.SourceGuard`) stop one
address guessing passwords, but a password spray comes from many addresses,
each trying a few passwords for many users. Counting failures per *account*
stops that; a naive per-account lockout, though, lets anyone on the internet
lock a user out (Lync's Edge did: lyncsmash does it in one command, and the
directory behind it then locked the account everywhere).

So failures per account are counted in two kinds, by where they come from:

* **familiar** sources: an address in one of the deployment's internal
  networks (``[lockout] internal_networks``), or one that signed in as this
  account successfully before (remembered per account, at most
  :data:`MAX_FAMILIAR_PER_ACCOUNT`, each for ``familiar_days``);
* **unfamiliar** sources: every other address.

``threshold`` failures of one kind within ``window`` lock *that kind* of
access to the account for ``duration``: while it is locked, sign-ins of that
kind are refused even with the right password. A spray from the internet
locks only the internet out of the account; the user keeps signing in from
the office and from the addresses they used before. The threshold sits below
the directory's own (``directory_threshold``), so Conclave locks first and
the directory never does.

A locked sign-in gets the same answer as a wrong password (a fresh
challenge), and only existing accounts are tracked, so nothing here tells an
outsider whether a name exists or is locked. Sources are keyed as the guard
keys them (:func:`~conclave.transport.guard.source_key`: IPv4 address, IPv6
/64).

Pure logic: no clock, no I/O; every call takes ``now`` (wall-clock seconds,
so that a saved state means the same after a restart). :meth:`snapshot` and
:meth:`restore` carry the state across restarts.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from conclave.transport.guard import source_key

MAX_FAMILIAR_PER_ACCOUNT: Final = 16
"""Addresses remembered as familiar per account: a laptop, a phone, home and a
few offices, with room to spare. The oldest is forgotten first."""

MAX_TRACKED_ACCOUNTS: Final = 200_000
"""Accounts with lockout state held at once (a few hundred octets each). Only
existing accounts are tracked (a failure for an unknown name is never
recorded), so it is a ceiling on the directory's size, not on an attacker's
invention; past it the least recently touched account is forgotten."""

SECONDS_PER_DAY: Final = 86_400.0

FAMILIAR_NEWS: Final = 3600.0
"""A success from a familiar source is news for the observer (the pool's other
members) only when its last one is this many seconds old: a client signing each
request does not publish each one, and familiarity lasts days."""

Observer = Callable[[str, str, str, float], None]
"""Told of what other holders of the same accounts must apply: ``(kind, user,
source, now)`` with kind ``failure``, ``success`` or ``reset``."""


class Access(enum.Enum):
    """Where a sign-in comes from, as far as one account is concerned."""

    FAMILIAR = "familiar"
    UNFAMILIAR = "unfamiliar"


@dataclass
class _Counter:
    failures: int = 0
    since: float = 0.0
    """when the first failure of the current window happened"""
    locked_until: float = 0.0


@dataclass
class _Account:
    familiar: OrderedDict[str, float] = field(default_factory=OrderedDict)
    """source key -> last successful sign-in from it, oldest first"""
    counters: dict[Access, _Counter] = field(
        default_factory=lambda: {kind: _Counter() for kind in Access}
    )


@dataclass(frozen=True)
class Locked:
    """A lock that a failure just set: log it and count it."""

    user: str
    access: Access
    until: float
    failures: int


@dataclass(frozen=True)
class AccountStatus:
    """What ``conclave lockout status`` shows for one account."""

    user: str
    familiar_sources: tuple[str, ...]
    failures: Mapping[str, int]
    locked_until: Mapping[str, float]
    """per kind of access, when its lock ends (only kinds locked now)"""


class AccountLockout:
    """Failure counters and locks per account, split by familiar and unfamiliar sources."""

    def __init__(
        self,
        *,
        threshold: int = 5,
        window: float = 600.0,
        duration: float = 600.0,
        familiar_days: float = 30.0,
        internal_networks: Iterable[str] = (),
        max_accounts: int = MAX_TRACKED_ACCOUNTS,
    ) -> None:
        if threshold < 1 or window <= 0 or duration <= 0 or familiar_days <= 0:
            raise ValueError("threshold, window, duration and familiar_days must be > 0")
        self.threshold = threshold
        self.window = window
        self.duration = duration
        self.familiar_seconds = familiar_days * SECONDS_PER_DAY
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in internal_networks)
        self.max_accounts = max_accounts
        self._accounts: OrderedDict[str, _Account] = OrderedDict()
        self.observer: Observer | None = None
        """Told of each failure, reset and news-worthy success (the pool shares them:
        docs/pools.md); what ``shared=False`` applies came from there and is not told."""

    # -- the questions sign-in asks --------------------------------------------------------
    def access(self, user: str, source: str, now: float) -> Access:
        """Whether ``source`` is familiar to ``user`` (an internal network, or a
        successful sign-in from it within ``familiar_days``)."""
        if self._internal(source):
            return Access.FAMILIAR
        account = self._accounts.get(user.lower())
        if account is not None:
            seen = account.familiar.get(source_key(source))
            if seen is not None and now - seen <= self.familiar_seconds:
                return Access.FAMILIAR
        return Access.UNFAMILIAR

    def is_locked(self, user: str, source: str, now: float) -> bool:
        """True while sign-ins as ``user`` from ``source``'s kind of access are refused."""
        account = self._accounts.get(user.lower())
        if account is None:
            return False
        return account.counters[self.access(user, source, now)].locked_until > now

    def failure(self, user: str, source: str, now: float, *, shared: bool = True) -> Locked | None:
        """A failed sign-in as existing account ``user`` from ``source``. Returns
        the lock it set, if this failure reached the threshold."""
        kind = self.access(user, source, now)
        account = self._account(user)
        counter = account.counters[kind]
        if counter.locked_until > now:
            return None  # already locked: the attempt was refused, not counted again
        if shared and self.observer is not None:
            self.observer("failure", user, source, now)
        if counter.failures == 0 or now - counter.since > self.window:
            counter.failures, counter.since = 0, now
        counter.failures += 1
        if counter.failures < self.threshold:
            return None
        counter.locked_until = now + self.duration
        failures, counter.failures = counter.failures, 0
        return Locked(user, kind, counter.locked_until, failures)

    def success(self, user: str, source: str, now: float, *, shared: bool = True) -> None:
        """A successful sign-in: the source becomes familiar, its kind's failures are forgiven."""
        kind = self.access(user, source, now)
        account = self._account(user)
        counter = account.counters[kind]
        key = source_key(source)
        if shared and self.observer is not None:
            last = account.familiar.get(key)
            stale = last is None or now - last > FAMILIAR_NEWS
            if counter.failures or (stale and not self._internal(source)):
                self.observer("success", user, source, now)
        counter.failures = 0
        if self._internal(source):
            return
        account.familiar.pop(key, None)
        account.familiar[key] = now
        while len(account.familiar) > MAX_FAMILIAR_PER_ACCOUNT:
            account.familiar.popitem(last=False)

    # -- operations --------------------------------------------------------------------------
    def status(self, now: float, user: str | None = None) -> list[AccountStatus]:
        """Accounts with failures or locks now (or just ``user``'s, whatever its state)."""
        names = [user.lower()] if user is not None else list(self._accounts)
        out: list[AccountStatus] = []
        for name in names:
            account = self._accounts.get(name)
            if account is None:
                if user is not None:
                    out.append(AccountStatus(user, (), {}, {}))
                continue
            status = self._status(name, account, now)
            if user is not None or status.failures or status.locked_until:
                out.append(status)
        return out

    def locked(self, now: float) -> list[AccountStatus]:
        return [s for s in self.status(now) if s.locked_until]

    def reset(self, user: str, now: float, *, shared: bool = True) -> bool:
        """Unlock ``user`` and forget its failures (its familiar sources stay).
        Returns whether any access to it was locked."""
        if shared and self.observer is not None:
            self.observer("reset", user, "", now)
        account = self._accounts.get(user.lower())
        if account is None:
            return False
        was_locked = any(c.locked_until > now for c in account.counters.values())
        account.counters = {kind: _Counter() for kind in Access}
        return was_locked

    def snapshot(self, now: float) -> dict[str, Any]:
        """The state worth keeping across a restart, as JSON-ready data."""
        accounts: dict[str, Any] = {}
        for name, account in self._accounts.items():
            familiar = {
                key: seen
                for key, seen in account.familiar.items()
                if now - seen <= self.familiar_seconds
            }
            counters = {
                kind.value: {
                    "failures": c.failures,
                    "since": c.since,
                    "locked_until": c.locked_until,
                }
                for kind, c in account.counters.items()
                if c.failures or c.locked_until > now
            }
            if familiar or counters:
                accounts[name] = {"familiar": familiar, "counters": counters}
        return {"saved": now, "accounts": accounts}

    def restore(self, data: Mapping[str, Any]) -> int:
        """Load a :meth:`snapshot`; returns how many accounts. Malformed entries are skipped."""
        loaded = 0
        accounts = data.get("accounts")
        if not isinstance(accounts, Mapping):
            return 0
        for name, entry in accounts.items():
            try:
                account = _Account()
                for key, seen in sorted(entry["familiar"].items(), key=lambda kv: kv[1]):
                    account.familiar[str(key)] = float(seen)
                for kind in Access:
                    c = entry["counters"].get(kind.value)
                    if c is not None:
                        account.counters[kind] = _Counter(
                            int(c["failures"]), float(c["since"]), float(c["locked_until"])
                        )
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            while len(account.familiar) > MAX_FAMILIAR_PER_ACCOUNT:
                account.familiar.popitem(last=False)
            self._accounts[str(name).lower()] = account
            loaded += 1
        self._trim()
        return loaded

    # -- internals ---------------------------------------------------------------------------
    def _internal(self, source: str) -> bool:
        if not self.networks:
            return False
        try:
            address = ipaddress.ip_address(source.partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def _account(self, user: str) -> _Account:
        name = user.lower()
        account = self._accounts.get(name)
        if account is None:
            account = self._accounts[name] = _Account()
            self._trim()
        else:
            self._accounts.move_to_end(name)
        return account

    def _trim(self) -> None:
        """Forget the least recently touched accounts beyond the ceiling. Only existing
        accounts are tracked, so this takes failures on more accounts than the
        directory holds (and a forgotten lock then starts again from nothing)."""
        while len(self._accounts) > self.max_accounts:
            self._accounts.popitem(last=False)

    def _status(self, name: str, account: _Account, now: float) -> AccountStatus:
        failures = {
            kind.value: c.failures
            for kind, c in account.counters.items()
            if c.failures and now - c.since <= self.window
        }
        locked = {
            kind.value: c.locked_until
            for kind, c in account.counters.items()
            if c.locked_until > now
        }
        return AccountStatus(name, tuple(account.familiar), failures, locked)
