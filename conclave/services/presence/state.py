"""Publications and subscriptions: the presence state, behind an interface.

:class:`PresenceState` is to presence what
:class:`~conclave.services.location.LocationService` is to registrations: a
narrow, synchronous interface (every method is a dict operation; nothing
awaits), so that a pool keeps the same data in Redis with a local copy kept
current over pub/sub (:class:`SharedPresenceState`). :class:`MemoryPresenceState` is the
Standard Edition implementation.

What lives where in a pool (:mod:`conclave.cluster.presence`): publications are pool-wide (any Front
End may receive a user's PUBLISH, and every Front End serving a watcher
needs the result). A subscription's dialog can be stored anywhere, but its
NOTIFYs must leave from the Front End holding the subscriber's connection
(:attr:`Subscription.flow`), so subscriptions stay with that Front End and
a change to a presentity is announced to the others over pub/sub.

**Restart.** Nothing here survives a restart, deliberately: a publication
is soft state that its client refreshes (RFC 3903 §4.1), and a subscription
is bound to a connection that a restart closes anyway. After a restart a
client's next PUBLISH refresh gets 412 (it then publishes afresh, RFC 3903
§4.4) and its next SUBSCRIBE refresh gets 481 (it then subscribes afresh,
RFC 6665 §4.1.2.2); until then its watchers see it Offline.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from conclave.sip.flow import Flow
from conclave.sip.uri import URI

from .model import DeviceState, Relationship

if TYPE_CHECKING:
    from .notifier import NotifyTemplate

K = TypeVar("K")
V = TypeVar("V")


@dataclass(eq=False)
class Publication:
    """One device's published state (RFC 3903 event state), identified by its entity tag."""

    aor: str
    etag: str
    state: DeviceState
    expires_at: float
    updated_at: float


class Kind(enum.Enum):
    """What a subscription watches."""

    PRESENCE = "presence"
    """One presentity (RFC 3856)."""
    LIST = "list"
    """The subscriber's own contact list, as a resource list (RFC 4662)."""
    WINFO = "presence.winfo"
    """Who watches the subscriber (RFC 3857)."""


SubKey = tuple[str, str, str, str, str]
"""(Call-ID, our tag, the subscriber's tag, event package, event id or "")."""


@dataclass(eq=False)
class Subscription:
    """One subscription: its dialog (RFC 6665 §4.3) and its notification bookkeeping."""

    key: SubKey
    kind: Kind
    watcher: str
    """The subscriber's address of record (the From of its SUBSCRIBE)."""
    owner: str
    """Whose data is sent: the presentity (PRESENCE), the subscriber (LIST, WINFO)."""
    resource: str
    """The Request-URI subscribed to: presentity, list URI, or the owner for winfo."""
    event: str
    """The Event header value every NOTIFY carries (package and ``id``)."""
    target: URI
    """Remote target: the Contact of the SUBSCRIBE (refreshed by every refresh)."""
    local: str
    """Our side of the dialog (NOTIFY From): the SUBSCRIBE's To with our tag."""
    remote: str
    """The subscriber's side (NOTIFY To): the SUBSCRIBE's From."""
    route_set: tuple[str, ...]
    flow: Flow
    """The connection the SUBSCRIBE (or its latest refresh) came on; NOTIFYs go there."""
    expires_at: float
    remote_cseq: int
    local_cseq: int = 0
    pending: bool = False
    """Waiting for the owner's authorisation (RFC 6665 §4.2.1.3): NOTIFYs carry no state."""
    approved_later: bool = False
    """It was pending and the owner then allowed it (winfo event "approved")."""
    members: frozenset[str] = frozenset()
    """LIST only: the contacts' addresses of record."""
    # -- notification bookkeeping (this process only) ----------------------------------
    version: int = 0
    """RLMI or watcherinfo version of the last NOTIFY (RFC 4662 §5.2, RFC 3858 §4)."""
    sent: dict[str, bytes] = field(default_factory=dict)
    """Per resource, the document last sent (what the watcher believes)."""
    dirty: set[str] = field(default_factory=set)
    """Resources that changed since the last NOTIFY (or winfo: non-empty if any)."""
    queued: bool = False
    """A merge-window check is queued in the notifier."""
    full_due: bool = False
    """A full-state NOTIFY is owed (initial, refresh) but waits for the one in flight."""
    closing: str | None = None
    """Termination reason once terminated; the final NOTIFY may still be owed."""
    final_sent: bool = False
    """The final NOTIFY went out (or the subscriber is gone): send nothing more."""
    inflight: object | None = None
    """The client transaction of the NOTIFY in flight (at most one at a time)."""
    levels: dict[str, Relationship] = field(default_factory=dict)
    """Per resource, the watcher's privacy level (a cache of ``Directory.relationship``)."""
    levels_generation: int = -1
    """Which directory snapshot :attr:`levels` were computed from (see :class:`~.views.Views`)."""
    template: NotifyTemplate | None = None
    """What every NOTIFY of this dialog repeats, rendered once (see :mod:`.notifier`)."""

    @property
    def resources(self) -> frozenset[str]:
        """Presentities whose changes concern this subscription."""
        if self.kind is Kind.PRESENCE:
            return frozenset((self.owner,))
        if self.kind is Kind.LIST:
            return self.members
        return frozenset()


class PresenceState(Protocol):
    """Every publication and subscription. Synchronous and fast; ``aor`` is canonical."""

    # -- publications ------------------------------------------------------------------
    def publications(self, aor: str) -> list[Publication]:
        """The AOR's publications, oldest first (expired ones until removed)."""
        ...

    def publication(self, etag: str) -> Publication | None: ...

    def put_publication(self, publication: Publication) -> None:
        """Add, or replace the one with the same entity tag."""
        ...

    def remove_publication(self, etag: str) -> Publication | None: ...

    def publication_count(self) -> int: ...

    def published(self) -> list[str]:
        """Every AOR with at least one publication."""
        ...

    # -- subscriptions -----------------------------------------------------------------
    def subscription(self, key: SubKey) -> Subscription | None: ...

    def add_subscription(self, sub: Subscription) -> None: ...

    def remove_subscription(self, key: SubKey) -> Subscription | None: ...

    def set_members(self, sub: Subscription, members: frozenset[str]) -> None:
        """Change a LIST subscription's contacts (and the index of who watches whom)."""
        ...

    def watching(self, aor: str) -> list[Subscription]:
        """PRESENCE and LIST subscriptions that include ``aor``: the fan-out of a change."""
        ...

    def winfo(self, owner: str) -> list[Subscription]:
        """``presence.winfo`` subscriptions of ``owner``."""
        ...

    def of_watcher(self, watcher: str) -> list[Subscription]: ...

    def all_subscriptions(self) -> list[Subscription]: ...

    def subscription_count(self) -> int: ...


@runtime_checkable
class SharedPresenceState(PresenceState, Protocol):
    """Presence state that other processes change too (a pool's, :mod:`conclave.cluster`)."""

    def follow(self, changed: Callable[[str, list[Publication], list[Publication]], None]) -> None:
        """Call ``changed(aor, added, removed)`` after another process changed ``aor``'s
        publications (already applied here)."""
        ...


class MemoryPresenceState:
    """The Standard Edition's presence state: dicts and indexes, nothing persisted."""

    def __init__(self) -> None:
        self._pubs: dict[str, Publication] = {}
        self._pubs_by_aor: dict[str, dict[str, Publication]] = {}
        self._subs: dict[SubKey, Subscription] = {}
        self._watching: dict[str, dict[SubKey, Subscription]] = {}
        self._winfo: dict[str, dict[SubKey, Subscription]] = {}
        self._by_watcher: dict[str, dict[SubKey, Subscription]] = {}

    # -- publications ------------------------------------------------------------------
    def publications(self, aor: str) -> list[Publication]:
        return list(self._pubs_by_aor.get(aor, {}).values())

    def publication(self, etag: str) -> Publication | None:
        return self._pubs.get(etag)

    def put_publication(self, publication: Publication) -> None:
        self._pubs[publication.etag] = publication
        self._pubs_by_aor.setdefault(publication.aor, {})[publication.etag] = publication

    def remove_publication(self, etag: str) -> Publication | None:
        pub = self._pubs.pop(etag, None)
        if pub is not None:
            _discard(self._pubs_by_aor, pub.aor, etag)
        return pub

    def publication_count(self) -> int:
        return len(self._pubs)

    def published(self) -> list[str]:
        return list(self._pubs_by_aor)

    # -- subscriptions -----------------------------------------------------------------
    def subscription(self, key: SubKey) -> Subscription | None:
        return self._subs.get(key)

    def add_subscription(self, sub: Subscription) -> None:
        self._subs[sub.key] = sub
        self._by_watcher.setdefault(sub.watcher, {})[sub.key] = sub
        if sub.kind is Kind.WINFO:
            self._winfo.setdefault(sub.owner, {})[sub.key] = sub
        self._index(sub, sub.resources)

    def remove_subscription(self, key: SubKey) -> Subscription | None:
        sub = self._subs.pop(key, None)
        if sub is None:
            return None
        _discard(self._by_watcher, sub.watcher, key)
        if sub.kind is Kind.WINFO:
            _discard(self._winfo, sub.owner, key)
        self._unindex(sub, sub.resources)
        return sub

    def set_members(self, sub: Subscription, members: frozenset[str]) -> None:
        if sub.key in self._subs:
            self._unindex(sub, sub.members - members)
            self._index(sub, members - sub.members)
        sub.members = members

    def watching(self, aor: str) -> list[Subscription]:
        return list(self._watching.get(aor, {}).values())

    def winfo(self, owner: str) -> list[Subscription]:
        return list(self._winfo.get(owner, {}).values())

    def of_watcher(self, watcher: str) -> list[Subscription]:
        return list(self._by_watcher.get(watcher, {}).values())

    def all_subscriptions(self) -> list[Subscription]:
        return list(self._subs.values())

    def subscription_count(self) -> int:
        return len(self._subs)

    def _index(self, sub: Subscription, aors: Iterable[str]) -> None:
        for aor in aors:
            self._watching.setdefault(aor, {})[sub.key] = sub

    def _unindex(self, sub: Subscription, aors: Iterable[str]) -> None:
        for aor in aors:
            _discard(self._watching, aor, sub.key)


def _discard(index: dict[str, dict[K, V]], outer: str, inner: K) -> None:
    bucket = index.get(outer)
    if bucket is not None:
        bucket.pop(inner, None)
        if not bucket:
            del index[outer]
