"""The pool-wide location service: every member sees every registration.

Each member holds all of the pool's bindings in memory (the request path reads
them as in Standard Edition, :class:`~conclave.services.location.MemoryLocationService`)
and Redis holds the same bindings for the others: one hash per address of
record, ``<prefix>reg:<aor>``, one field per binding (its key: the
``+sip.instance`` and ``reg-id`` when the client sent them, RFC 5626, else the
contact URI), whose value is the binding as JSON with the member that holds
its connection and the token naming that connection (:mod:`.tokens`).

- A binding this member registered has its flow; it is written to Redis when
  it changes and removed when it goes (expiry, its connection closing, a
  REGISTER anywhere in the pool replacing or removing it).
- A binding held by another member has no flow here and a Path that starts at
  that member: ``<sip:TOKEN@member:port;transport=tls;lr>``, only ever one of the
  members the configuration names (an entry in Redis naming anything else is
  ignored: a member never sends to an address the shared state merely names). The router
  sends a request for it to that member over mutual TLS like a request for a
  remote user to its Edge, and the member relays it on the client's connection
  (430 Flow Failed when it is gone, and the binding is dropped). A binding that
  came through one of our trusted Edges keeps the Edge's Path: any member reaches
  the Edge.
- A member that dies (its heartbeat lapses) takes its bindings with it: the
  others drop them and delete them from Redis; its clients reconnect to another
  member (DNS gives every member) and register there.

Registrations live in Redis, not in the database: the pool shares them, and
after a whole-pool restart every connection is new anyway (clients register
again, RFC 5626 §4.4.1).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import structlog

from conclave.services.location import Contact, MemoryLocationService
from conclave.sip.errors import RemoteProtocolError
from conclave.sip.uri import SipURI, parse_uri

from .state import PoolState
from .tokens import MemberTokens

log = structlog.get_logger("conclave.cluster.locations")

MAX_FIELDS_READ = 1000
"""Bindings read for one address of record (the registrar allows far fewer): a
corrupt or hostile hash cannot make a member build an unbounded list."""


def binding_key(contact: Contact) -> str:
    """Which binding of its AOR ``contact`` is, pool-wide (RFC 5626 §6, RFC 3261 §10.3)."""
    if contact.instance_id is not None and contact.reg_id is not None:
        return f"i:{contact.instance_id}:{contact.reg_id}"
    return f"u:{contact.uri}"


def _member(value: str) -> str | None:
    try:
        member = json.loads(value).get("member")
    except (ValueError, AttributeError):
        return None
    return member if isinstance(member, str) else None


class PoolLocationService(MemoryLocationService):
    """Registrations shared by a pool's members (see the module docstring)."""

    def __init__(
        self,
        state: PoolState,
        tokens: MemberTokens,
        hop: Callable[[str, str], str | None],
        via_edge: Callable[[tuple[str, ...]], bool] = lambda _path: False,
    ) -> None:
        super().__init__(store=None)
        self.pool = state
        self.tokens = tokens
        self._hop = hop
        """``hop(member, token)``: the Path entry through that member, None if unknown."""
        self._via_edge = via_edge
        """True for a Path that starts at one of our trusted Edges (any member reaches it)."""
        self._member_of: dict[int, str] = {}
        """id(contact) -> member, for bindings another member holds."""
        state.on_event("loc", self._changed_elsewhere)
        state.on_resync(self.resync)
        state.on_member_gone(self.member_gone)

    def _key(self, aor: str) -> str:
        return self.pool.key("reg", aor)

    # -- writes go to Redis too ----------------------------------------------------------------
    def _set(self, aor: str, contacts: list[Contact], *, persist: bool = True) -> None:
        old = self._aors.get(aor, [])
        super()._set(aor, contacts, persist=False)
        for contact in old:
            if all(c is not contact for c in contacts):
                self._member_of.pop(id(contact), None)
        if not persist:
            return
        kept = {id(c) for c in old}
        new_keys = {binding_key(c) for c in contacts}
        removed = sorted({binding_key(c) for c in old} - new_keys)
        written = {
            binding_key(c): self._encode(c)
            for c in contacts
            if c.flow is not None and id(c) not in kept
        }
        written = {k: v for k, v in written.items() if v is not None}
        if not removed and not written:
            return
        key = self._key(aor)

        def op(pipe: Any) -> None:
            if removed:
                pipe.hdel(key, *removed)
            if written:
                pipe.hset(key, mapping=written)

        self.pool.write(op, ("loc", aor))

    def _write_own(self, aor: str) -> None:
        own = {binding_key(c): self._encode(c) for c in self._aors.get(aor, []) if c.flow}
        mapping = {k: v for k, v in own.items() if v is not None}
        if mapping:
            key = self._key(aor)
            self.pool.write(lambda pipe: pipe.hset(key, mapping=mapping), ("loc", aor))

    def _encode(self, contact: Contact) -> str | None:
        assert contact.flow is not None
        token = self.tokens.token(contact.flow)
        if token is None:
            return None
        return json.dumps(
            {
                "member": self.pool.member,
                "token": token,
                "uri": str(contact.uri),
                "contact": contact.contact,
                "expires_at": contact.expires_at,
                "call_id": contact.call_id,
                "cseq": contact.cseq,
                "transport": contact.transport,
                "remote_addr": contact.remote_addr,
                "updated_at": contact.updated_at,
                "q": contact.q,
                "instance_id": contact.instance_id,
                "reg_id": contact.reg_id,
                "path": list(contact.path),
                "user_agent": contact.user_agent,
            },
            separators=(",", ":"),
        )

    def _decode(self, aor: str, value: str) -> tuple[str, Contact] | None:
        try:
            data = json.loads(value)
            member = str(data["member"])
            uri = parse_uri(str(data["uri"]))
            if not isinstance(uri, SipURI):
                return None
            path = tuple(str(p) for p in data.get("path") or ())
            if not path or not self._via_edge(path):
                hop = self._hop(member, str(data["token"]))
                if hop is None:  # not a member we know: never a place to send to
                    return None
                path = (hop, *path)
            reg_id = data.get("reg_id")
            contact = Contact(
                aor=aor,
                uri=uri,
                contact=str(data["contact"]),
                expires_at=float(data["expires_at"]),
                call_id=str(data["call_id"]),
                cseq=int(data["cseq"]),
                flow=None,
                transport=str(data["transport"]),
                remote_addr=str(data["remote_addr"]),
                updated_at=float(data["updated_at"]),
                q=float(data.get("q", 1.0)),
                instance_id=data.get("instance_id"),
                reg_id=int(reg_id) if reg_id is not None else None,
                path=path,
                user_agent=data.get("user_agent"),
            )
        except (ValueError, KeyError, TypeError, RemoteProtocolError) as exc:
            log.warning("unusable pool binding", aor=aor, reason=str(exc))
            return None
        return member, contact

    # -- what the others changed ---------------------------------------------------------------
    async def _changed_elsewhere(self, _member: str, aor: str) -> None:
        fields = await self.pool.read_hash(self._key(aor))
        self._adopt(aor, fields, lambda member: member not in self.pool.departed)

    def _adopt(self, aor: str, fields: dict[str, str], live: Callable[[str], bool]) -> None:
        """Make our copy of ``aor`` what Redis holds: others' bindings as they are
        there (those of ``live`` members), ours as we hold them (unless another
        member took one over)."""
        others: dict[str, tuple[str, Contact]] = {}
        for field, value in list(fields.items())[:MAX_FIELDS_READ]:
            decoded = self._decode(aor, value)
            if decoded is None:
                continue
            member, contact = decoded
            if member != self.pool.member and live(member):
                others[field] = decoded
        held = self._aors.get(aor, [])
        before = {binding_key(c): self._member_of.get(id(c)) for c in held if c.flow is None}
        mine = [c for c in held if c.flow is not None and binding_key(c) not in others]
        contacts = mine + [contact for _member, contact in others.values()]
        self._set(aor, contacts, persist=False)
        for member, contact in others.values():
            self._member_of[id(contact)] = member
        after = {field: member for field, (member, _c) in others.items()}
        if after != before:  # a device appeared, moved or went; refreshes are not news
            log.info(
                "pool registrations changed",
                aor=aor,
                members=sorted(set(after.values())),
                contacts=sorted(str(c.uri) for _m, c in others.values()),
            )

    async def resync(self) -> None:
        """Read every binding of the pool (joining, or back after losing Redis);
        delete what an earlier run of this member left (its connections are gone)."""
        count = 0
        for key in await self.pool.keys(self._key("*")):
            aor = key.removeprefix(self._key(""))
            fields = await self.pool.read_hash(key)
            ours = {binding_key(c) for c in self._aors.get(aor, []) if c.flow is not None}
            stale = [
                f for f, v in fields.items() if _member(v) == self.pool.member and f not in ours
            ]
            if stale:
                self._delete(aor, stale)
            self._adopt(aor, fields, lambda member: member in self.pool.alive)
            count += 1
        for aor in list(self._aors):  # ours, in case Redis lost them (it restarted)
            self._write_own(aor)
        log.info("pool registrations loaded", aors=count, bindings=self.count())

    def member_gone(self, member: str) -> None:
        """``member`` stopped beating: drop its bindings here and in Redis."""
        dropped = 0
        for aor, held in list(self._aors.items()):
            kept = [c for c in held if self._member_of.get(id(c)) != member]
            if len(kept) != len(held):
                dropped += len(held) - len(kept)
                gone = [binding_key(c) for c in held if self._member_of.get(id(c)) == member]
                self._set(aor, kept, persist=False)
                self._delete(aor, gone)
        if dropped:
            log.info("bindings of a departed member dropped", member=member, bindings=dropped)

    def _delete(self, aor: str, fields: list[str]) -> None:
        key = self._key(aor)

        def op(pipe: Any) -> None:
            pipe.hdel(key, *fields)

        self.pool.write(op, ("loc", aor))

    def member_of(self, contact: object) -> str | None:
        """The member that holds ``contact``'s connection (None: this one)."""
        return self._member_of.get(id(contact))
