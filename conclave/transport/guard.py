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
  transport refuses its connections and drops its datagrams. Bans escalate:
  a source banned again within :data:`BAN_MEMORY` of its last ban's end is
  banned twice as long as the time before, up to ``max_ban_seconds``, so an
  attacker who simply waits out each ban loses more time at every round,
  while a client that misbehaved once starts afresh the next day. Ended bans
  are collected by :meth:`SourceGuard.ended_bans` (for the log and metrics);
- a leaky counter of authentication failures that drains at
  ``auth_failures_per_minute`` per minute. A failure that takes it above that
  figure bans the source: more than that many failures in quick succession,
  or a sustained rate above it, is password guessing.

Sources are keyed by :func:`source_key`: an IPv4 address is one source, and
so is a whole IPv6 /64 (an IPv4-mapped IPv6 address counts as the IPv4 address
it maps). One IPv6 host is routinely given a /64 (RFC 4291 §2.5.1, RFC 7421)
and may pick any of its 2**64 addresses for each packet, so limits and bans per
exact IPv6 address would stop nobody: rate buckets, authentication failures
and bans all apply to the /64.

Memory is bounded by ``max_tracked`` (see :data:`MAX_TRACKED_SOURCES`). UDP
source addresses can be spoofed, so an attacker can make us see any number
of sources; when the table is full the least recently seen entries make room,
preferring ones whose state has decayed to that of a new source (nothing is
lost by forgetting those).
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Iterable
from typing import Final

from conclave.sip.flow import canonical_host

MAX_TRACKED_SOURCES: Final = 100_000
"""Sources remembered at once. An entry costs about 200 octets, so the table
stays near 20 MB even when a spoofed UDP flood shows us a new address every
packet, while a pool's real clients (tens of thousands behind far fewer NATs)
fit with room to spare."""

MAX_BAN_SECONDS: Final = 86_400.0
"""Longest an escalated ban lasts (a day): doubling from 10 minutes reaches it
at the 9th ban. Longer would let an attacker who shares a NAT or an IPv6 /64
with real users (or who spoofs their UDP source address) shut them out for
days; an operator who wants a source out for good blocks it in the firewall."""

BAN_MEMORY: Final = 86_400.0
"""Seconds after a ban ends during which a new ban of the same source counts
as a repeat (and lasts twice as long as the last). A source that stays clean
this long is back to the first ban's length."""

MAX_BAN_DOUBLINGS: Final = 20
"""Cap on the repeat count kept per source, so the length computation stays a
small float however long an attack lasts (2**20 x any ban is past the cap)."""

EVICTION_SCAN: Final = 64
"""Least recently seen entries examined for a decayed one before evicting the
oldest outright. It bounds the work per insertion when the table is full."""

IPV6_SOURCE_PREFIX: Final = 64
"""Leading bits of an IPv6 address that name one source. A /64 is the smallest
prefix a site or host is normally assigned (RFC 4291 §2.5.1, RFC 7421): inside
it an attacker chooses the low 64 bits freely (privacy addresses, RFC 8981),
so anything longer lets one host evade a ban by changing address. Shorter
prefixes (/56, /48) would sweep in unrelated customers of the same ISP."""

_IPV6_PREFIX_OCTETS: Final = IPV6_SOURCE_PREFIX // 8
_IPV6_HOST_ZEROS: Final = bytes(16 - _IPV6_PREFIX_OCTETS)
_IPV4_MAPPED: Final = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96 (RFC 4291 §2.5.5.2)

_SECONDS_PER_MINUTE: Final = 60.0
_EPSILON: Final = 1e-9  # refills are sums of float products: a source pacing itself
# exactly at the rate must not be refused because 10 × 0.1 came out as 0.9999999


def source_key(ip: str) -> str:
    """The key one source is tracked under: the IPv4 address, or the IPv6 /64.

    ``192.0.2.7`` stays ``192.0.2.7``; ``::ffff:192.0.2.7`` becomes
    ``192.0.2.7``; ``2001:db8:1:2:a:b:c:d`` becomes ``2001:db8:1:2::/64``
    (a zone, as in ``fe80::1%eth0``, is kept: link-local /64s on different
    links are different networks). Text that is not an IP literal is returned
    unchanged, so a caller's odd input costs one entry, never an exception.
    """
    if ":" not in ip:
        return ip  # IPv4, the common case: no parsing on the hot path
    addr, sep, zone = ip.partition("%")
    try:
        packed = socket.inet_pton(socket.AF_INET6, addr)
    except OSError:
        return ip
    if packed.startswith(_IPV4_MAPPED):
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    network = socket.inet_ntop(socket.AF_INET6, packed[:_IPV6_PREFIX_OCTETS] + _IPV6_HOST_ZEROS)
    return f"{network}/{IPV6_SOURCE_PREFIX}{sep}{zone}"


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
    __slots__ = (
        "auth_level", "auth_stamp", "banned_until", "repeats", "stamp", "strikes", "tokens",
    )  # fmt: skip

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.stamp = now  # when tokens were last refilled
        self.strikes = 0
        self.banned_until = float("-inf")  # also, after it passed: when the last ban ended
        self.repeats = 0  # bans so far that escalate the next one (see BAN_MEMORY)
        self.auth_level = 0.0
        self.auth_stamp = now


class SourceGuard:
    """Token-bucket rate limiting and banning per source IP.

    ``rate``: requests per second a source may sustain. ``burst``: requests it
    may make at once (the bucket size). ``ban_seconds``: how long a first ban
    lasts; each repeat doubles it, up to ``max_ban_seconds``.
    ``auth_failures_per_minute``: failed authentications tolerated per minute.
    ``limited_before_ban``: requests refused as LIMITED before a source that
    keeps exceeding its bucket is banned. ``exempt``: IP addresses never limited
    or banned (monitoring probes, a trusted peer server); each is exempt by its
    exact address, not its /64. Loopback is not exempt unless listed.

    Every method takes the peer's address as the socket reports it; the entry
    it reads or changes is that of :func:`source_key` (the IPv6 /64).
    """

    def __init__(
        self,
        *,
        rate: float = 50.0,
        burst: int = 200,
        ban_seconds: float = 300.0,
        max_ban_seconds: float = MAX_BAN_SECONDS,
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
        self.max_ban_seconds = max(float(max_ban_seconds), self.ban_seconds)
        self.auth_failures_per_minute = int(auth_failures_per_minute)
        self.limited_before_ban = int(limited_before_ban)
        self.max_tracked = int(max_tracked)
        # Normalised the way sockets print addresses, so a plain string lookup
        # works; an IPv4 address is listed in its IPv4-mapped IPv6 form too.
        self.exempt = frozenset(_exempt_forms(exempt))
        # Ordered least recently seen first: touching an entry moves it to the end.
        self._sources: dict[str, _Source] = {}
        # Sources whose ban has not been reported as ended yet (key -> end).
        self._banned: dict[str, float] = {}

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
        key = source_key(ip)
        source = self._touch(key, now)
        if source.banned_until > now:
            return Verdict.BANNED
        self._refill(source, now)
        if source.tokens >= 1.0 - _EPSILON:
            source.tokens -= 1.0
            source.strikes = 0
            return Verdict.ALLOWED
        source.strikes += 1
        if source.strikes > self.limited_before_ban:
            self._ban(key, source, now)
            return Verdict.BANNED_NOW
        return Verdict.LIMITED

    def is_banned(self, ip: str, now: float) -> bool:
        """True while ``ip`` (its /64 for IPv6) is banned. Cheap; never adds an entry."""
        if ip in self.exempt:
            return False
        source = self._sources.get(source_key(ip))
        return source is not None and source.banned_until > now

    def banned_until(self, ip: str, now: float) -> float | None:
        """When the ban on ``ip`` ends (for Retry-After or a log), or None if not banned."""
        if ip in self.exempt:
            return None
        source = self._sources.get(source_key(ip))
        if source is None or source.banned_until <= now:
            return None
        return source.banned_until

    def ban_length(self, ip: str) -> float:
        """Seconds the current (or last) ban of ``ip`` lasts in all, escalation
        included (for the "source banned" log line); 0 if it was never banned."""
        source = self._sources.get(source_key(ip))
        if source is None or not source.repeats:
            return 0.0
        return self._length(source.repeats - 1)

    def record_auth_failure(self, ip: str, now: float) -> bool:
        """Count a failed authentication; True if this failure just banned ``ip``.

        The caller logs the ban when True. Failures from an already banned
        source (which should not get this far) return False.
        """
        if ip in self.exempt:
            return False
        key = source_key(ip)
        source = self._touch(key, now)
        if source.banned_until > now:
            return False
        self._drain_auth(source, now)
        source.auth_level += 1.0
        if source.auth_level > self.auth_failures_per_minute:
            self._ban(key, source, now)
            return True
        return False

    def ban(self, ip: str, now: float, seconds: float | None = None) -> None:
        """Ban ``ip`` (its /64 for IPv6) explicitly (an operator's or another rule's decision)."""
        if ip in self.exempt:
            return
        key = source_key(ip)
        source = self._touch(key, now)
        self._ban(key, source, now)
        if seconds is not None:
            source.banned_until = self._banned[key] = now + seconds

    def unban(self, ip: str) -> None:
        """Lift a ban and forget the source's history (for IPv6, the whole /64's)."""
        key = source_key(ip)
        self._sources.pop(key, None)
        self._banned.pop(key, None)

    def ended_bans(self, now: float) -> list[str]:
        """The sources (keys, as :func:`source_key` gives them) whose ban ended
        since the last call, each reported once, for the log and metrics. The
        work is proportional to the number of bans in force, never to the
        number of sources tracked."""
        ended = [key for key, until in self._banned.items() if until <= now]
        for key in ended:
            del self._banned[key]
        return ended

    def _length(self, earlier_bans: int) -> float:
        """Seconds a ban lasts after ``earlier_bans`` repeats: doubled each time, capped."""
        return min(self.ban_seconds * 2.0**earlier_bans, self.max_ban_seconds)

    def _ban(self, key: str, source: _Source, now: float) -> None:
        if now - source.banned_until > BAN_MEMORY:
            source.repeats = 0  # clean for long enough (or never banned): a first ban
        seconds = self._length(source.repeats)
        source.repeats = min(source.repeats + 1, MAX_BAN_DOUBLINGS)
        source.banned_until = self._banned[key] = now + seconds
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
        if source.repeats and now - source.banned_until <= BAN_MEMORY:
            return False  # forgetting it would forgive a repeat offender
        self._refill(source, now)
        self._drain_auth(source, now)
        return source.tokens >= self.burst - _EPSILON and source.auth_level <= _EPSILON

    def _touch(self, key: str, now: float) -> _Source:
        """The entry for ``key``, created if needed, moved to most recently seen."""
        sources = self._sources
        source = sources.pop(key, None)
        if source is None:
            if len(sources) >= self.max_tracked:
                self._evict(now)
            source = _Source(float(self.burst), now)
        sources[key] = source
        return source

    def _evict(self, now: float) -> None:
        sources = self._sources
        for scanned, (key, source) in enumerate(sources.items()):
            if scanned >= EVICTION_SCAN:
                break
            if self._decayed(source, now):
                del sources[key]
                return
        del sources[next(iter(sources))]


def _exempt_forms(addresses: Iterable[str]) -> set[str]:
    """Each exempt address as sockets print it, IPv4 also in its IPv4-mapped form."""
    forms: set[str] = set()
    for address in addresses:
        text = canonical_host(address)
        forms.add(text)
        plain = source_key(text)
        if "/" not in plain:  # IPv4, or IPv4-mapped IPv6 made plain
            forms.update((plain, f"::ffff:{plain}"))
    return forms
