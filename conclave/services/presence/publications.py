"""PUBLISH (RFC 3903, event package ``presence``): entity tags, expiry, rate limits.

:class:`Publications` judges one PUBLISH and applies it, returning the
answer for the service to send. The checks run in RFC 3903 §6's order, and
every check runs before anything changes, so a refused PUBLISH -- including
a malformed or malicious body (400 with the parser's reason) -- leaves the
state exactly as it was:

1. ``Event`` must be ``presence``: 489 with ``Allow-Events`` otherwise;
2. the Request-URI must be the publisher's own address of record: 403;
3. ``SIP-If-Match`` must name a live publication of that AOR: 412;
4. ``Expires``: absent means the default; 0 removes; below the minimum
   gets 423 with ``Min-Expires``; above the maximum is shortened;
5. a body must be ``application/pidf+xml`` (415 with ``Accept``); a PUBLISH
   without body must be a refresh (``SIP-If-Match``); 400 otherwise;
6. the per-user rate limit (state-changing PUBLISHes only, see below): 503
   with ``Retry-After``;
7. the body must parse (:func:`~.pidf.parse_pidf`): 400 with the reason.

Each success answers 200 with a *new* ``SIP-ETag`` and the granted
``Expires`` (RFC 3903 §6 step 8).

**Rate limit.** Only PUBLISHes that carry a body count (initial and
modify): they are what fans out to watchers. Refreshes and removals are
never refused, so a rate-limited client cannot lose its publication. Over
the limit the answer is 503 with ``Retry-After`` (the seconds until the
bucket allows one more): RFC 3903 §6 names no better code, and a well
behaved client waits and retries. The answer carries no state change.

**Devices.** A user may hold :data:`MAX_PUBLICATIONS_PER_USER`
publications (one per device); a new one beyond that replaces the one
refreshed least recently, typically a device that crashed without removing
its publication.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

from conclave.sip.address import aor_of
from conclave.sip.fields import parse_content_type, parse_event, parse_expires
from conclave.sip.message import Request

from .model import Availability, DeviceState
from .pidf import MAX_NOTE_LENGTH, PIDF_CONTENT_TYPE, PidfError, parse_pidf
from .settings import PresenceSettings
from .state import PresenceState, Publication
from .timers import Deadlines

MAX_PUBLICATIONS_PER_USER = 16
"""Live publications per user (devices). A person rarely has more than four."""

MAX_RATE_BUCKETS = 100_000
"""Rate-limit buckets kept; full ones are pruned first (they say nothing)."""


@dataclass(frozen=True)
class Answer:
    """The response to send: status, reason and extra header fields."""

    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


def too_brief(settings: PresenceSettings) -> Answer:
    """423 with ``Min-Expires``: the PUBLISH (RFC 3903 §6) or SUBSCRIBE (RFC 6665
    §4.2.1.1) asked for a lifetime below ``settings.min_expires``."""
    return Answer(423, "Interval Too Brief", (("Min-Expires", str(settings.min_expires)),))


def new_etag() -> str:
    return os.urandom(12).hex()


class RateLimiter:
    """A token bucket per key: ``rate`` per second sustained, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float) -> float:
        """0 if one token was taken; otherwise the seconds until one is available."""
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
        if len(self._buckets) >= MAX_RATE_BUCKETS and key not in self._buckets:
            self.prune(now)
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0

    def prune(self, now: float) -> None:
        """Forget buckets that have refilled (they are the same as no bucket)."""
        full = [
            key
            for key, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self.rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]


NOTE_DEVICE = "conclave-web-note"
"""The device identifier of a note set through the web API (:meth:`Publications.set_note`)."""


class Publications:
    """Judges and applies PUBLISH requests; expires publications."""

    def __init__(
        self,
        state: PresenceState,
        settings: PresenceSettings,
        deadlines: Deadlines,
        on_change: Callable[[str], None],
        etag: Callable[[], str] = new_etag,
    ) -> None:
        self.state = state
        self.settings = settings
        self.deadlines = deadlines
        self.on_change = on_change
        self.etag = etag
        self.limiter = RateLimiter(settings.publish_rate, settings.publish_burst)
        self._order = itertools.count(1)

    def handle(self, request: Request, publisher: str, now: float) -> Answer:
        """Judge and apply one PUBLISH from ``publisher`` (the From AOR, authenticated).

        ``request.uri``'s AOR has been computed by the caller as ``target``
        would be; RemoteProtocolError (malformed header) propagates as 400.
        """
        s = self.settings
        event = request.headers.get("Event")
        if event is None or parse_event(event).package.lower() != "presence":
            return Answer(
                489, "Only the presence event can be published", (("Allow-Events", "presence"),)
            )
        target = _target(request)
        if target != publisher:
            return Answer(403, "You may only publish your own presence")
        if_match = request.headers.get("SIP-If-Match")
        old: Publication | None = None
        if if_match is not None:
            old = self.state.publication(if_match.strip())
            if old is None or old.aor != publisher or old.expires_at <= now:
                return Answer(412, "Conditional Request Failed")
        raw = request.headers.get("Expires")
        expires = s.default_expires if raw is None else parse_expires(raw)
        if expires == 0:
            if old is None:
                return Answer(400, "Expires: 0 needs SIP-If-Match (nothing to remove)")
            self._remove(old)
            return Answer(200, "OK", (("SIP-ETag", old.etag), ("Expires", "0")))
        if expires < s.min_expires:
            return too_brief(s)
        expires = min(expires, s.max_expires)
        if not request.body:
            if old is None:
                return Answer(400, "A PUBLISH without a body must refresh (SIP-If-Match)")
            return self._store(publisher, old.state, expires, now, old=old)
        content_type = request.headers.get("Content-Type")
        if content_type is None or parse_content_type(content_type).mime != PIDF_CONTENT_TYPE:
            return Answer(415, "Unsupported Media Type", (("Accept", PIDF_CONTENT_TYPE),))
        wait = self.limiter.take(publisher, now)
        if wait > 0:
            return Answer(
                503,
                "Publishing too fast",
                (("Retry-After", str(max(1, math.ceil(wait)))),),
            )
        try:
            device = parse_pidf(request.body, entity=publisher)
        except PidfError as exc:
            return Answer(400, f"Bad PIDF: {exc.reason}")
        device = dataclasses.replace(device, published=next(self._order))
        return self._store(publisher, device, expires, now, old=old)

    def set_note(self, aor: str, note: str | None, now: float) -> None:
        """The note ``aor`` set outside SIP (the web API); None or blank removes it.

        It is a publication of its own carrying only the note, with the state
        Offline: "the most available device wins", so it never makes the user
        look online or change state, and "the most recent note wins", so it
        shows until a device publishes a newer note. It lasts as long as any
        publication may (``max_expires``); setting it again refreshes it.
        """
        text = (note or "").strip()[:MAX_NOTE_LENGTH]
        old = next((p for p in self.state.publications(aor) if p.state.device == NOTE_DEVICE), None)
        if not text:
            if old is not None:
                self._remove(old)
            return
        device = DeviceState(
            Availability.OFFLINE, note=text, device=NOTE_DEVICE, published=next(self._order)
        )
        self._store(aor, device, self.settings.max_expires, now, old=old)

    def _store(
        self,
        aor: str,
        device: DeviceState,
        expires: int,
        now: float,
        *,
        old: Publication | None,
    ) -> Answer:
        changed = old is None or old.state != device
        if old is not None:
            self.state.remove_publication(old.etag)
            self.deadlines.cancel(("pub", old.etag))
        else:
            self._make_room(aor)
        pub = Publication(aor, self.etag(), device, now + expires, now)
        self.state.put_publication(pub)
        self.deadlines.schedule(("pub", pub.etag), pub.expires_at)
        if changed:
            self.on_change(aor)
        return Answer(200, "OK", (("SIP-ETag", pub.etag), ("Expires", str(expires))))

    def _make_room(self, aor: str) -> None:
        pubs = self.state.publications(aor)
        if len(pubs) < MAX_PUBLICATIONS_PER_USER:
            return
        oldest = min(pubs, key=lambda p: p.updated_at)
        self.state.remove_publication(oldest.etag)
        self.deadlines.cancel(("pub", oldest.etag))

    def _remove(self, pub: Publication) -> None:
        self.state.remove_publication(pub.etag)
        self.deadlines.cancel(("pub", pub.etag))
        self.on_change(pub.aor)

    def expire(self, etag: str, now: float) -> None:
        """A publication's timer fired (RFC 3903 §4.1: it simply ends)."""
        pub = self.state.publication(etag)
        if pub is not None and pub.expires_at <= now:
            self._remove(pub)

    def drop_user(self, aor: str) -> None:
        """Forget every publication of ``aor`` (the user was removed or disabled)."""
        pubs = self.state.publications(aor)
        for pub in pubs:
            self.state.remove_publication(pub.etag)
            self.deadlines.cancel(("pub", pub.etag))
        if pubs:
            self.on_change(aor)


def _target(request: Request) -> str | None:
    try:
        return aor_of(request.uri)
    except ValueError:
        return None
