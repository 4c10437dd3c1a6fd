"""The location service (RFC 3261 §10): address-of-record -> contact bindings.

Theory of operation
-------------------
The registrar writes bindings and the proxy reads them, both on the request
path, so :class:`LocationService` is *synchronous*: every method is a dict
operation and nothing awaits. The interface is narrow so that a pool can keep
the same data in Redis later (a local cache kept current over pub/sub).

:class:`MemoryLocationService` (Standard Edition) holds everything in dicts
and persists *write-behind*: each change marks its AOR dirty, and
:meth:`~MemoryLocationService.run_persistence` writes the whole binding set of
each dirty AOR to the :class:`~conclave.store.RegistrationStore` once per
interval, so repeated changes to one AOR between two flushes cost one write.

**Loss window.** Changes made in the last flush interval (default 1 s) before
a crash are lost. A lost refresh or new binding is repaired by the client's
next REGISTER (clients refresh well before expiry, RFC 3261 §10.2.4); a lost
removal leaves a binding that stays until it expires. A graceful shutdown
calls :meth:`~MemoryLocationService.flush` and loses nothing.

Flows (RFC 5626, RFC 5923)
--------------------------
Every binding keeps the :class:`~conclave.sip.flow.Flow` its REGISTER
arrived on. A binding registered over TCP or TLS is reachable only over that
connection (the client is typically behind NAT). When the connection closes,
the transport calls :meth:`LocationService.remove_flow` and its bindings are
*removed*: RFC 5626 §5.3 treats the flow as dead, and removing them at once
makes the user appear offline (presence, offline IM) instead of leaving a
binding that could only yield 430 Flow Failed until it expires. The client
notices (keep-alives, RFC 5626 §4.4) and re-registers over a new connection.

After a restart every stream connection is gone and connection ids are reused
by the new process, so restored stream bindings are kept with ``flow=None``
(:attr:`Contact.reachable` is False): the proxy treats them as unreachable
until the client re-registers. UDP bindings are restored with their flow (our
socket, the recorded source address) and stay reachable.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

# The canonical AOR form lives in the SIP core; re-exported here for callers
# that still import it from the location service.
from conclave.sip.errors import RemoteProtocolError
from conclave.sip.flow import Flow
from conclave.sip.grammar import quote, split_outside_quotes
from conclave.sip.uri import SipURI, parse_uri
from conclave.store.errors import StoreError
from conclave.store.registrations import Binding, RegistrationStore

_log = structlog.get_logger("conclave.services.location")

# Column sizes of the ``registrations`` table: longer values cannot be stored,
# so the registrar refuses them (400) rather than accept what it cannot persist.
FLUSH_BATCH = 500
"""AORs written per transaction by the write-behind: one commit for many
REGISTERs, and a bounded statement however many users re-registered."""

MAX_CONTACT_URI_LENGTH = 2048
MAX_CALL_ID_LENGTH = 255
MAX_INSTANCE_ID_LENGTH = 255
MAX_USER_AGENT_LENGTH = 255
"""User-Agent is informational only, so a longer one is truncated, not refused."""


def _timestamp(when: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(when, dt.UTC)


def _format_addr(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Contact:
    """One binding of an address of record to a contact (RFC 3261 §10.2.1).

    ``contact`` is the Contact header value to echo (name-addr form, without
    ``expires`` and ``q``, which live in their own fields); ``uri`` is its
    URI, the binding's identity (§10.3 step 6) and the proxy's target.
    ``flow`` is the connection the REGISTER arrived on, or None for a stream
    binding restored after a restart (see the module docstring).
    ``transport`` and ``remote_addr`` ("host:port") record that flow even
    when it is gone. Times are epoch seconds, as ``now`` everywhere here.
    """

    aor: str
    uri: SipURI
    contact: str
    expires_at: float
    call_id: str
    cseq: int
    flow: Flow | None
    transport: str
    remote_addr: str
    updated_at: float
    q: float = 1.0
    instance_id: str | None = None
    """The ``+sip.instance`` value, unquoted (RFC 5626 §4.1), e.g. ``<urn:uuid:...>``."""
    reg_id: int | None = None
    """The ``reg-id`` (RFC 5626 §4.2); only kept together with an instance id."""
    path: tuple[str, ...] = ()
    """Path header values (RFC 3327) of the REGISTER, in order."""
    user_agent: str | None = None

    @property
    def reachable(self) -> bool:
        """False for a stream binding whose connection is gone (after a restart)."""
        return self.flow is not None

    def expires_in(self, now: float) -> int:
        """Whole seconds left, at least 1 while unexpired (for ``expires=``)."""
        return 0 if self.expires_at <= now else max(1, round(self.expires_at - now))

    def to_binding(self) -> Binding:
        """The store's record of this binding."""
        return Binding(
            aor=self.aor,
            contact=str(self.uri),
            expires_at=_timestamp(self.expires_at),
            call_id=self.call_id,
            cseq=self.cseq,
            transport=self.transport,
            remote_addr=self.remote_addr,
            updated_at=_timestamp(self.updated_at),
            q=self.q,
            instance_id=self.instance_id,
            reg_id=self.reg_id,
            connection_id=_flow_token(self.flow),
            path=", ".join(self.path) or None,
            user_agent=self.user_agent[:MAX_USER_AGENT_LENGTH] if self.user_agent else None,
        )

    @classmethod
    def from_binding(cls, binding: Binding) -> Contact:
        """Rebuild a binding loaded from the store; stream flows come back as None.

        Only the URI, ``+sip.instance`` and ``reg-id`` of the Contact value
        are stored, so other Contact parameters (feature tags) are lost until
        the client's next REGISTER. Raises ValueError for an unusable row.
        """
        try:
            uri = parse_uri(binding.contact)
        except RemoteProtocolError as exc:
            raise ValueError(f"stored contact {binding.contact!r}: {exc.reason}") from None
        if not isinstance(uri, SipURI):
            raise ValueError(f"stored contact {binding.contact!r} is not a SIP URI")
        contact = f"<{uri}>"
        if binding.instance_id is not None:
            contact += f";+sip.instance={quote(binding.instance_id)}"
            if binding.reg_id is not None:
                contact += f";reg-id={binding.reg_id}"
        path = tuple(p.strip() for p in split_outside_quotes(binding.path or "", ",") if p.strip())
        return cls(
            aor=binding.aor,
            uri=uri,
            contact=contact,
            expires_at=binding.expires_at.timestamp(),
            call_id=binding.call_id,
            cseq=binding.cseq,
            flow=_restored_flow(binding),
            transport=binding.transport,
            remote_addr=binding.remote_addr,
            updated_at=binding.updated_at.timestamp(),
            q=binding.q,
            instance_id=binding.instance_id,
            reg_id=binding.reg_id if binding.instance_id is not None else None,
            path=path,
            user_agent=binding.user_agent,
        )


def _restored_flow(binding: Binding) -> Flow | None:
    # A stream connection does not survive a restart, and its id may already
    # name a different connection of the new process: never restore one. A
    # UDP flow is just our socket and the peer's address, both still valid.
    if binding.transport != "udp" or not binding.connection_id:
        return None
    try:
        flow = Flow.from_token(binding.connection_id)
    except ValueError:
        return None
    return None if flow.reliable else flow


def _flow_token(flow: Flow | None) -> str | None:
    if flow is None:
        return None
    try:
        return flow.token()
    except ValueError:  # not IP literals: nothing a restarted process could use
        return None


@dataclass(frozen=True, slots=True)
class ContactUpdate:
    """One validated Contact of a REGISTER: add or refresh, or remove (``expires == 0``)."""

    uri: SipURI
    contact: str
    """The Contact value to keep, name-addr form, without ``expires`` and ``q``."""
    expires: int
    """Granted seconds (already clamped by the registrar); 0 removes."""
    q: float = 1.0
    instance_id: str | None = None
    reg_id: int | None = None


@dataclass(frozen=True, slots=True)
class RegisterChange:
    """Everything one REGISTER asks of the location service, already validated."""

    call_id: str
    cseq: int
    flow: Flow
    updates: tuple[ContactUpdate, ...] = ()
    remove_all: bool = False
    """``Contact: *`` with ``Expires: 0`` (RFC 3261 §10.2.2): remove every binding."""
    path: tuple[str, ...] = ()
    user_agent: str | None = None


class LocationError(Exception):
    """A REGISTER that cannot be applied to the current bindings; nothing was changed."""


class OutOfOrder(LocationError):
    """Same Call-ID as a stored binding but a CSeq not above it (RFC 3261 §10.3 step 7)."""


class TooManyBindings(LocationError):
    """The change would leave the AOR with more bindings than allowed."""


RegisteredListener = Callable[[str, Contact], None]
"""``on_registered(aor, contact)``: called after a REGISTER added or refreshed a binding."""


class LocationService(Protocol):
    """The bindings of every address of record. All methods are synchronous and fast.

    ``aor`` arguments are canonical (:func:`conclave.sip.address.aor_of`); ``now`` is epoch seconds
    supplied by the caller, so tests step time.
    """

    def lookup(self, aor: str, now: float) -> list[Contact]:
        """Unexpired bindings, highest q then most recent first (flow-less ones included)."""
        ...

    def bindings(self, aor: str, now: float) -> list[Contact]:
        """Unexpired bindings in registration order (for the REGISTER response)."""
        ...

    def apply(
        self, aor: str, change: RegisterChange, now: float, *, max_contacts: int | None = None
    ) -> list[Contact]:
        """Apply one REGISTER atomically; return the AOR's bindings afterwards.

        Raises :class:`OutOfOrder` or :class:`TooManyBindings` with nothing changed.
        """
        ...

    def remove_flow(self, flow: Flow) -> int:
        """Remove every binding registered over ``flow`` (it closed); return how many."""
        ...

    def remove_binding(self, aor: str, binding: object) -> bool:
        """Remove one binding :meth:`lookup` returned (its flow failed); False if gone."""
        ...

    def purge_expired(self, now: float) -> int:
        """Drop expired bindings; return how many went."""
        ...

    def count(self) -> int:
        """Bindings held (expired ones count until purged or touched), for metrics."""
        ...

    def add_listener(self, listener: RegisteredListener) -> None:
        """Call ``listener(aor, contact)`` after each binding a REGISTER adds or refreshes."""
        ...

    def remove_listener(self, listener: RegisteredListener) -> None: ...


def _matches(existing: Contact, update: ContactUpdate) -> bool:
    # RFC 5626 §6: with an instance id and a reg-id the binding is keyed on
    # them (a new flow replaces the old one even if the URI changed); the
    # URI rule of RFC 3261 §10.3 step 6 applies as well, so that an AOR
    # never holds two bindings for one contact URI.
    if (
        update.instance_id is not None
        and update.reg_id is not None
        and existing.instance_id == update.instance_id
        and existing.reg_id == update.reg_id
    ):
        return True
    return existing.uri.equivalent(update.uri)


def _routing_order(contact: Contact) -> tuple[float, float]:
    return (-contact.q, -contact.updated_at)


class MemoryLocationService:
    """The Standard Edition location service: dicts, persisted write-behind.

    Start-up: ``await service.load(now)``, then run
    ``asyncio.create_task(service.run_persistence())``. Shutdown: cancel that
    task, then ``await service.flush()``. With ``store=None`` nothing is
    persisted (tests, or a cache in front of another store).
    """

    def __init__(self, store: RegistrationStore | None = None) -> None:
        self._store = store
        self._aors: dict[str, list[Contact]] = {}
        self._by_flow: dict[Flow, set[str]] = {}
        self._total = 0
        self._listeners: list[RegisteredListener] = []
        self._dirty: set[str] = set()
        self._flush_lock = asyncio.Lock()

    # --- reading -------------------------------------------------------------

    def lookup(self, aor: str, now: float) -> list[Contact]:
        return sorted(self.bindings(aor, now), key=_routing_order)

    def bindings(self, aor: str, now: float) -> list[Contact]:
        return [c for c in self._aors.get(aor, ()) if c.expires_at > now]

    def count(self) -> int:
        return self._total

    def aors(self) -> list[str]:
        """Every AOR with a binding held (expired ones until purged)."""
        return list(self._aors)

    # --- writing -------------------------------------------------------------

    def apply(
        self, aor: str, change: RegisterChange, now: float, *, max_contacts: int | None = None
    ) -> list[Contact]:
        held = self._aors.get(aor, [])
        current = [c for c in held if c.expires_at > now]
        if change.remove_all:
            targets = current
        else:
            targets = [c for c in current if any(_matches(c, u) for u in change.updates)]
        # RFC 3261 §10.3 step 7: a binding with the same Call-ID changes only
        # if the CSeq is higher; otherwise the whole request fails.
        for old in targets:
            if old.call_id == change.call_id and change.cseq <= old.cseq:
                raise OutOfOrder(
                    f"CSeq {change.cseq} is not above {old.cseq} stored for Call-ID {old.call_id}"
                )
        replaced = {id(c) for c in targets}
        added = [
            self._new_contact(aor, update, change, now)
            for update in (() if change.remove_all else change.updates)
            if update.expires > 0
        ]
        result = [c for c in current if id(c) not in replaced] + added
        if max_contacts is not None and len(result) > max(max_contacts, len(current)):
            raise TooManyBindings(f"at most {max_contacts} contacts may be registered")
        if targets or added or len(current) != len(held):
            self._set(aor, result)
        for contact in added:
            self._notify(aor, contact)
        return list(result)

    def remove_flow(self, flow: Flow) -> int:
        removed = 0
        for aor in self._by_flow.pop(flow, set()):
            held = self._aors.get(aor, [])
            kept = [c for c in held if c.flow != flow]
            removed += len(held) - len(kept)
            self._set(aor, kept)
        return removed

    def remove_binding(self, aor: str, binding: object) -> bool:
        held = self._aors.get(aor, [])
        kept = [c for c in held if c is not binding]
        if len(kept) == len(held):
            return False
        self._set(aor, kept)
        return True

    def purge_expired(self, now: float) -> int:
        """Drop expired bindings (a full scan: call it every few seconds, not per request)."""
        removed = 0
        for aor, held in list(self._aors.items()):
            kept = [c for c in held if c.expires_at > now]
            if len(kept) != len(held):
                removed += len(held) - len(kept)
                self._set(aor, kept)
        return removed

    def add_listener(self, listener: RegisteredListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: RegisteredListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    @staticmethod
    def _new_contact(
        aor: str, update: ContactUpdate, change: RegisterChange, now: float
    ) -> Contact:
        flow = change.flow
        return Contact(
            aor=aor,
            uri=update.uri,
            contact=update.contact,
            expires_at=now + update.expires,
            call_id=change.call_id,
            cseq=change.cseq,
            flow=flow,
            transport=flow.transport.lower(),
            remote_addr=_format_addr(flow.remote),
            updated_at=now,
            q=update.q,
            instance_id=update.instance_id,
            reg_id=update.reg_id if update.instance_id is not None else None,
            path=change.path,
            user_agent=change.user_agent,
        )

    def _set(self, aor: str, contacts: list[Contact], *, persist: bool = True) -> None:
        old = self._aors.get(aor, [])
        for contact in old:
            if contact.flow is not None:
                aors = self._by_flow.get(contact.flow)
                if aors is not None:
                    aors.discard(aor)
                    if not aors:
                        del self._by_flow[contact.flow]
        for contact in contacts:
            if contact.flow is not None:
                self._by_flow.setdefault(contact.flow, set()).add(aor)
        self._total += len(contacts) - len(old)
        if contacts:
            self._aors[aor] = contacts
        else:
            self._aors.pop(aor, None)
        if persist and self._store is not None:
            self._dirty.add(aor)

    def _notify(self, aor: str, contact: Contact) -> None:
        # Listeners run inside the REGISTER, before its 200 is sent: they must
        # only schedule work (asyncio.create_task), and one failing listener
        # must not fail the registration or starve the others.
        for listener in list(self._listeners):
            try:
                listener(aor, contact)
            except Exception:
                _log.exception("registered listener failed", aor=aor)

    # --- persistence ---------------------------------------------------------

    @property
    def pending(self) -> int:
        """AORs changed since the last successful flush."""
        return len(self._dirty)

    async def load(self, now: float) -> int:
        """Replace the in-memory bindings with the store's unexpired ones; return how many.

        Expired rows are deleted from the store first. Call once at start-up,
        before the server accepts requests; listeners are not called.
        """
        if self._store is None:
            return 0
        await self._store.purge_expired(_timestamp(now))
        grouped: dict[str, list[Contact]] = {}
        for binding in await self._store.load_all():
            try:
                contact = Contact.from_binding(binding)
            except ValueError as exc:
                _log.warning("skipping stored binding", aor=binding.aor, reason=str(exc))
                continue
            if contact.expires_at > now:
                grouped.setdefault(contact.aor, []).append(contact)
        for aor in list(self._aors):
            self._set(aor, [], persist=False)
        for aor, contacts in grouped.items():
            self._set(aor, contacts, persist=False)
        self._dirty.clear()
        return self._total

    async def flush(self) -> int:
        """Write every dirty AOR's bindings to the store now; return how many AORs.

        Raises :class:`~conclave.store.StoreError` if the database fails; the
        AORs not yet written stay queued for the next attempt.
        """
        if self._store is None:
            return 0
        async with self._flush_lock:
            pending = sorted(self._dirty)
            self._dirty.clear()
            written = 0
            try:
                while written < len(pending):
                    batch = pending[written : written + FLUSH_BATCH]
                    # Snapshot at write time: the freshest state wins, and a
                    # change during the await marks the AOR dirty again.
                    await self._store.replace_many(
                        {aor: [c.to_binding() for c in self._aors.get(aor, ())] for aor in batch}
                    )
                    written += len(batch)
            finally:
                self._dirty.update(pending[written:])
            return written

    async def run_persistence(self, interval: float = 1.0) -> None:
        """Flush every ``interval`` seconds until cancelled; database errors are logged.

        ``interval`` is the loss window on a crash. Cancel the task and
        ``await flush()`` on shutdown.
        """
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except StoreError as exc:
                _log.warning("registration flush failed", reason=str(exc), pending=self.pending)
