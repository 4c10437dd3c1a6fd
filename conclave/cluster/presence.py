"""Presence publications shared by a pool's members.

A user's PUBLISH may reach any member, and every member serving one of their
watchers needs the result. Each member keeps every publication of the pool in
memory (:class:`~conclave.services.presence.state.MemoryPresenceState`) and in
Redis, one hash per presentity, ``<prefix>pres:<aor>``, one field per entity
tag. A change is announced on the pool's event channel; the other members
re-read that presentity and notify their own watchers.

Subscriptions stay with the member that holds the subscriber's connection (its
NOTIFYs must leave on that connection); a subscriber whose member dies
subscribes again where it reconnects (RFC 6665 §4.1.2.2: its refresh gets 481,
or its dialog fails with its connection).

A publication outlives the member it reached (it belongs to the user, RFC 3903):
every member holds its expiry timer, and the first to fire deletes it pool-wide.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import structlog

from conclave.services.presence.model import Availability, DeviceState
from conclave.services.presence.state import MemoryPresenceState, Publication

from .state import PoolState

log = structlog.get_logger("conclave.cluster.presence")

MAX_PUBLICATIONS_READ = 64
"""Publications read for one presentity (the service keeps far fewer per user)."""

Changed = Callable[[str, list[Publication], list[Publication]], None]
"""``changed(aor, added, removed)``: another member changed ``aor``'s publications."""


def _encode(pub: Publication) -> str:
    s = pub.state
    return json.dumps(
        {
            "availability": s.availability.value,
            "note": s.note,
            "activities": list(s.activities),
            "device": s.device,
            "place": s.place,
            "published": s.published,
            "expires_at": pub.expires_at,
            "updated_at": pub.updated_at,
        },
        separators=(",", ":"),
    )


def _decode(aor: str, etag: str, value: str) -> Publication | None:
    try:
        data = json.loads(value)
        state = DeviceState(
            availability=Availability(data["availability"]),
            note=data.get("note"),
            activities=tuple(str(a) for a in data.get("activities") or ()),
            device=data.get("device"),
            place=data.get("place"),
            published=int(data.get("published", 0)),
        )
        return Publication(aor, etag, state, float(data["expires_at"]), float(data["updated_at"]))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("unusable pool publication", aor=aor, reason=str(exc))
        return None


class PoolPresenceState(MemoryPresenceState):
    """Publications in memory and in the pool's Redis (see the module docstring)."""

    def __init__(self, state: PoolState) -> None:
        super().__init__()
        self.pool = state
        self._changed: Changed | None = None
        state.on_event("pres", self._changed_elsewhere)
        state.on_resync(self.resync)

    def follow(self, changed: Changed) -> None:
        """Tell ``changed`` of every change another member makes (the presence service)."""
        self._changed = changed

    def _key(self, aor: str) -> str:
        return self.pool.key("pres", aor)

    def put_publication(self, publication: Publication) -> None:
        super().put_publication(publication)
        key, etag, value = self._key(publication.aor), publication.etag, _encode(publication)

        def op(pipe: Any) -> None:
            pipe.hset(key, etag, value)

        self.pool.write(op, ("pres", publication.aor))

    def remove_publication(self, etag: str) -> Publication | None:
        pub = super().remove_publication(etag)
        if pub is not None:
            key = self._key(pub.aor)
            self.pool.write(lambda pipe: pipe.hdel(key, etag), ("pres", pub.aor))
        return pub

    async def _changed_elsewhere(self, _member: str, aor: str) -> None:
        self._adopt(aor, await self.pool.read_hash(self._key(aor)))

    def _adopt(self, aor: str, fields: dict[str, str]) -> None:
        current = {p.etag: p for p in self.publications(aor)}
        wanted: dict[str, Publication] = {}
        for etag, value in list(fields.items())[:MAX_PUBLICATIONS_READ]:
            pub = _decode(aor, etag, value)
            if pub is not None:
                wanted[etag] = pub
        removed = [p for etag, p in current.items() if etag not in wanted]
        added = [
            p
            for etag, p in wanted.items()
            if etag not in current
            or (current[etag].state, current[etag].expires_at) != (p.state, p.expires_at)
        ]
        if not removed and not added:
            return
        for pub in removed:
            super().remove_publication(pub.etag)
        for pub in added:
            super().remove_publication(pub.etag)
            super().put_publication(pub)
        if self._changed is not None:
            self._changed(aor, added, removed)

    async def resync(self) -> None:
        seen: set[str] = set()
        for key in await self.pool.keys(self._key("*")):
            aor = key.removeprefix(self._key(""))
            seen.add(aor)
            self._adopt(aor, await self.pool.read_hash(key))
        for aor in self.published():
            if aor not in seen:  # Redis lost it (a restart): ours again, for everyone
                for pub in self.publications(aor):
                    self.put_publication(pub)
        log.info("pool presence loaded", presentities=len(seen))
