"""Per-source-IP protection: request rate limits, bans, and authentication failures.

Pure logic, no clock and no asyncio: every call takes ``now`` in seconds. All
callers sharing one guard must use the same clock: the SIP stack passes
``time.time()``, and the transport manager's ``guard_clock`` defaults to it.

Theory of operation. Each tracked source has:

- a token bucket of ``burst`` tokens refilled at ``rate`` per second. Each
  request takes one token (:meth:`SourceGuard.allow`). A request that finds the
  bucket empty is a *strike*; after ``limited_before_ban`` strikes in a row (the
  default 0 means the first one) the source is banned. Strikes before that
  answer LIMITED, so a caller that prefers to shed load gently (503 with
  Retry-After, RFC 3261 §21.5.4) can, and a source that backs off recovers;
- a ban deadline. While banned, :meth:`SourceGuard.is_banned` is true: the
  transport refuses its connections and drops its datagrams;
- a leaky counter of authentication failures that drains at
  ``auth_failures_per_minute`` per minute. A failure that takes it above that
  figure bans the source: more than that many failures in quick succession,
  or a sustained rate above it, is password guessing.

Memory is bounded by ``max_tracked`` (see :data:`MAX_TRACKED_SOURCES`). UDP
source addresses can be spoofed, so an attacker can make us see any number
of sources; when the table is full the least recently seen entries make room,
preferring ones whose state has decayed to that of a new source (nothing is
lost by forgetting those).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final

from conclave.transport.flow import canonical_host

MAX_TRACKED_SOURCES: Final = 100_000
"""Sources remembered at once. An entry costs about 200 octets, so the table
stays near 20 MB even when a spoofed UDP flood shows us a new address every
packet, while a pool's real clients (tens of thousands behind far fewer NATs)
fit with room to spare."""

EVICTION_SCAN: Final = 64
"""Least recently seen entries examined for a decayed one before evicting the
oldest outright. It bounds the work per insertion when the table is full."""

_SECONDS_PER_MINUTE: Final = 60.0
_EPSILON: Final = 1e-9  # refills are sums of float products: a source pacing itself
# exactly at the rate must not be refused because 10 × 0.1 came out as 0.9999999


class Verdict(enum.Enum):
    """What :meth:`SourceGuard.allow` decided about one request."""

    ALLOWED = "allowed"
    """Within the rate: handle it."""
    LIMITED = "limited"
    """Over the rate but not banned (only if ``limited_before_ban`` > 0): refuse it."""
    BANNED_NOW = "banned_now"
    """This request got the source banned: refuse it and log "source banned"."""
    BANNED = "banned"
    """The source was already banned: drop it silently (logging would amplify a flood)."""


class _Source:
    __slots__ = ("auth_level", "auth_stamp", "banned_until", "stamp", "strikes", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.stamp = now  # when tokens were last refilled
        self.strikes = 0
        self.banned_until = float("-inf")
        self.auth_level = 0.0
        self.auth_stamp = now


class SourceGuard:
    """Token-bucket rate limiting and banning per source IP.

    ``rate``: requests per second a source may sustain. ``burst``: requests it
    may make at once (the bucket size). ``ban_seconds``: how long a ban lasts.
    ``auth_failures_per_minute``: failed authentications tolerated per minute.
    ``limited_before_ban``: requests refused as LIMITED before a source that
    keeps exceeding its bucket is banned. ``exempt``: IP addresses never limited
    or banned (monitoring probes, a trusted peer server). Loopback is not exempt
    unless listed.
    """

    def __init__(
        self,
        *,
        rate: float = 50.0,
        burst: int = 200,
        ban_seconds: float = 300.0,
        auth_failures_per_minute: int = 10,
        limited_before_ban: int = 0,
        exempt: Iterable[str] = (),
        max_tracked: int = MAX_TRACKED_SOURCES,
    ) -> None:
        if rate <= 0 or burst < 1 or ban_seconds <= 0 or auth_failures_per_minute < 1:
            raise ValueError("rate, burst, ban_seconds and auth_failures_per_minute must be > 0")
        if limited_before_ban < 0 or max_tracked < 1:
            raise ValueError("limited_before_ban must be >= 0 and max_tracked >= 1")
        self.rate = float(rate)
        self.burst = int(burst)
        self.ban_seconds = float(ban_seconds)
        self.auth_failures_per_minute = int(auth_failures_per_minute)
        self.limited_before_ban = int(limited_before_ban)
        self.max_tracked = int(max_tracked)
        # Normalised the way sockets print addresses, so a plain string lookup works.
        self.exempt = frozenset(canonical_host(ip) for ip in exempt)
        # Ordered least recently seen first: touching an entry moves it to the end.
        self._sources: dict[str, _Source] = {}

    def __len__(self) -> int:
        """Number of sources currently tracked."""
        return len(self._sources)

    def allow(self, ip: str, now: float) -> Verdict:
        """Account one request from ``ip`` and say whether to handle it.

        On BANNED_NOW the caller logs the ban once; on LIMITED, BANNED_NOW and
        BANNED it refuses or drops the request.
        """
        if ip in self.exempt:
            return Verdict.ALLOWED
        source = self._touch(ip, now)
        if source.banned_until > now:
            return Verdict.BANNED
        self._refill(source, now)
        if source.tokens >= 1.0 - _EPSILON:
            source.tokens -= 1.0
            source.strikes = 0
            return Verdict.ALLOWED
        source.strikes += 1
        if source.strikes > self.limited_before_ban:
            self._ban(source, now)
            return Verdict.BANNED_NOW
        return Verdict.LIMITED

    def is_banned(self, ip: str, now: float) -> bool:
        """True while ``ip`` is banned. Cheap; never adds an entry."""
        source = self._sources.get(ip)
        return source is not None and source.banned_until > now

    def banned_until(self, ip: str, now: float) -> float | None:
        """When the ban on ``ip`` ends (for Retry-After or a log), or None if not banned."""
        source = self._sources.get(ip)
        if source is None or source.banned_until <= now:
            return None
        return source.banned_until

    def record_auth_failure(self, ip: str, now: float) -> bool:
        """Count a failed authentication; True if this failure just banned ``ip``.

        The caller logs the ban when True. Failures from an already banned
        source (which should not get this far) return False.
        """
        if ip in self.exempt:
            return False
        source = self._touch(ip, now)
        if source.banned_until > now:
            return False
        self._drain_auth(source, now)
        source.auth_level += 1.0
        if source.auth_level > self.auth_failures_per_minute:
            self._ban(source, now)
            return True
        return False

    def ban(self, ip: str, now: float, seconds: float | None = None) -> None:
        """Ban ``ip`` explicitly (an operator's or another rule's decision)."""
        if ip in self.exempt:
            return
        source = self._touch(ip, now)
        self._ban(source, now)
        if seconds is not None:
            source.banned_until = now + seconds

    def unban(self, ip: str) -> None:
        """Lift a ban and forget the source's history."""
        self._sources.pop(ip, None)

    def _ban(self, source: _Source, now: float) -> None:
        source.banned_until = now + self.ban_seconds
        source.strikes = 0
        source.auth_level = 0.0
        # Nothing is refilled while banned: the bucket starts full when it ends.
        source.tokens = float(self.burst)
        source.stamp = source.auth_stamp = source.banned_until

    def _refill(self, source: _Source, now: float) -> None:
        if now > source.stamp:
            source.tokens = min(float(self.burst), source.tokens + (now - source.stamp) * self.rate)
            source.stamp = now

    def _drain_auth(self, source: _Source, now: float) -> None:
        if now > source.auth_stamp:
            drained = (now - source.auth_stamp) * self.auth_failures_per_minute
            source.auth_level = max(0.0, source.auth_level - drained / _SECONDS_PER_MINUTE)
            source.auth_stamp = now

    def _decayed(self, source: _Source, now: float) -> bool:
        """True if the entry now says no more than a fresh one would."""
        if source.banned_until > now or source.strikes:
            return False
        self._refill(source, now)
        self._drain_auth(source, now)
        return source.tokens >= self.burst - _EPSILON and source.auth_level <= _EPSILON

    def _touch(self, ip: str, now: float) -> _Source:
        """The entry for ``ip``, created if needed, moved to most recently seen."""
        sources = self._sources
        source = sources.pop(ip, None)
        if source is None:
            if len(sources) >= self.max_tracked:
                self._evict(now)
            source = _Source(float(self.burst), now)
        sources[ip] = source
        return source

    def _evict(self, now: float) -> None:
        sources = self._sources
        for scanned, (ip, source) in enumerate(sources.items()):
            if scanned >= EVICTION_SCAN:
                break
            if self._decayed(source, now):
                del sources[ip]
                return
        del sources[next(iter(sources))]
