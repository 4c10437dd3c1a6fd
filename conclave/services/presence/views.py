"""What each subscription is shown: the documents NOTIFYs carry.

Theory of operation
-------------------
A presentity's state is its live publications folded by
:func:`~.model.aggregate` (plus "in a call"). :class:`Views` caches that
aggregate per presentity and, per presentity, the rendered PIDF for each
privacy level, so a change costs at most one render per level however many
watchers there are. Each subscription caches its watcher's privacy level
toward each resource (:attr:`~.state.Subscription.levels`) for as long as
the :class:`~.directory.Directory` snapshot it came from is in force, so a
watcher then costs a few dict lookups and a bytes comparison (fan-out is
linear in watchers).

**The privacy rule for NOTIFYs.** A watcher only ever learns what is in the
document rendered for it. Every decision about *whether* to send a NOTIFY
is taken by comparing that document with the one last sent on the same
subscription (:attr:`~.state.Subscription.sent`); the presentity's raw state
never enters the decision. A blocked watcher's document is the offline
document, which never changes, so it gets exactly the NOTIFYs a watcher of
a user who really is offline gets: the initial one, one after each refresh,
and the final one -- never one when the owner's state changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .directory import Directory, domain_part
from .model import OFFLINE_VIEW, PresenceView, Relationship, aggregate, default_relationship
from .model import filter_view as _filter
from .pidf import PIDF_CONTENT_TYPE, render_pidf
from .rlmi import ResourcePart, render_rlmi_multipart
from .state import Kind, PresenceState, Subscription
from .winfo import WATCHERINFO_CONTENT_TYPE, WatcherInfo, render_watcherinfo

WINFO_KEY = ""
"""Key of a winfo subscription's document in :attr:`Subscription.sent`."""


@dataclass(frozen=True)
class Document:
    """A NOTIFY body to send and what the subscription will then believe."""

    content_type: str | None
    body: bytes
    sent: dict[str, bytes] = field(default_factory=dict)
    version: int | None = None


def stable_id(*parts: str) -> str:
    """A short deterministic identifier (RLMI cid, winfo watcher id) from ``parts``."""
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).hexdigest()


class Views:
    """Aggregated views per presentity and the documents built from them."""

    def __init__(
        self,
        state: PresenceState,
        directory: Callable[[], Directory],
        in_call: Callable[[str], bool],
        local_user: Callable[[str], bool],
        host: str,
    ) -> None:
        self.state = state
        self.directory = directory
        self.in_call = in_call
        self.local_user = local_user
        """True if an AOR names an enabled user of this server."""
        self.host = host
        self._views: dict[str, PresenceView] = {}
        self._rendered: dict[str, dict[Relationship | None, bytes]] = {}
        self._directory: Directory | None = None
        self._generation = 0
        """Bumped whenever ``directory()`` returns another snapshot: older
        :attr:`~.state.Subscription.levels` are then stale."""

    # -- one presentity --------------------------------------------------------------
    def view(self, aor: str) -> PresenceView:
        """The aggregate of ``aor``'s publications (cached until :meth:`refresh`)."""
        view = self._views.get(aor)
        if view is None:
            devices = [p.state for p in self.state.publications(aor)]
            view = aggregate(devices, in_call=self.in_call(aor))
            if view != OFFLINE_VIEW:
                self._views[aor] = view
        return view

    def refresh(self, aor: str) -> bool:
        """Recompute ``aor``'s aggregate after a change; True if it differs."""
        before = self._views.pop(aor, OFFLINE_VIEW)
        after = self.view(aor)
        if after == before:
            return False
        self._rendered.pop(aor, None)
        return True

    def pidf(self, owner: str, watcher: str) -> bytes:
        """The PIDF ``watcher`` may see of ``owner`` (the privacy rule above)."""
        return self._pidf(owner, self.directory().relationship(owner, watcher))

    def _pidf(self, owner: str, level: Relationship) -> bytes:
        """The PIDF of ``owner`` for a watcher at ``level``: rendered once per level and change."""
        view = self.view(owner)
        key: Relationship | None = level
        if level is Relationship.BLOCKED or view == OFFLINE_VIEW:
            # Exactly what this watcher would get of a user who is offline.
            key, view = None, OFFLINE_VIEW
        cache = self._rendered.get(owner)
        if cache is None:
            cache = self._rendered[owner] = {}
        body = cache.get(key)
        if body is None:
            shown = OFFLINE_VIEW if key is None else _filter(view, key)
            body = cache[key] = render_pidf(owner, shown)
        return body

    def level(self, sub: Subscription, owner: str) -> Relationship:
        """``sub``'s watcher's level toward ``owner``: ``Directory.relationship``, cached.

        The cache lives on the subscription (so it goes with it) and holds
        while the directory snapshot is the one it was computed from; a new
        snapshot (contacts or privacy changed) invalidates every entry.
        """
        directory = self.directory()
        if directory is not self._directory:
            self._directory = directory
            self._generation += 1
        levels = sub.levels
        if sub.levels_generation != self._generation:
            levels.clear()
            sub.levels_generation = self._generation
        found = levels.get(owner)
        if found is None:
            found = levels[owner] = directory.relationship(owner, sub.watcher)
        return found

    # -- one subscription --------------------------------------------------------------
    def document(self, sub: Subscription, *, full: bool) -> Document | None:
        """The body for ``sub``'s next NOTIFY, or None when nothing it can see changed.

        ``full`` forces a full-state document (initial NOTIFY, refresh,
        list membership change) even if nothing changed.
        """
        if sub.pending:
            return Document(None, b"") if full else None
        if sub.kind is Kind.PRESENCE:
            owner = sub.owner
            body = self._pidf(owner, self.level(sub, owner))
            if not full and sub.sent.get(owner) == body:
                return None
            return Document(PIDF_CONTENT_TYPE, body, {owner: body})
        if sub.kind is Kind.LIST:
            return self._list_document(sub, full=full)
        return self._winfo_document(sub, full=full)

    def _list_document(self, sub: Subscription, *, full: bool) -> Document | None:
        members = self.directory().contacts_of(sub.owner)
        wanted = members if full else [m for m in members if m in sub.dirty]
        bodies: dict[str, bytes] = {}
        for member in wanted:
            body = self._pidf(member, self.level(sub, member)) if self._served(member) else b""
            if full or sub.sent.get(member) != body:
                bodies[member] = body
        if not bodies and not full:
            return None
        version = sub.version + 1
        # A contact this server does not serve (another domain while
        # federation is off, or no such user) is listed as terminated.
        parts = [
            ResourcePart(uri=member, state="active", body=body)
            if body
            else ResourcePart(uri=member, state="terminated", reason="noresource")
            for member, body in bodies.items()
        ]
        content_type, body = render_rlmi_multipart(
            sub.resource,
            version,
            full_state=full,
            resources=parts,
            boundary="conclave-" + stable_id(sub.resource, str(version)),
        )
        return Document(content_type, body, bodies, version)

    def _served(self, aor: str) -> bool:
        return self.local_user(aor)

    def _winfo_document(self, sub: Subscription, *, full: bool) -> Document | None:
        watchers = self.watchers_of(sub.owner)
        digest = stable_id(*(f"{w.id}|{w.status}|{w.event}" for w in watchers)).encode()
        if not full and sub.sent.get(WINFO_KEY) == digest:
            return None
        version = sub.version + 1
        body = render_watcherinfo(sub.owner, version, watchers, full=True)
        return Document(WATCHERINFO_CONTENT_TYPE, body, {WINFO_KEY: digest}, version)

    def watchers_of(self, owner: str) -> Sequence[WatcherInfo]:
        """Everyone watching ``owner``'s presence (single and list subscriptions)."""
        out = []
        for sub in sorted(self.state.watching(owner), key=lambda s: s.key):
            if sub.closing is not None:
                continue
            status = "pending" if sub.pending else "active"
            event = "approved" if sub.approved_later else "subscribe"
            out.append(WatcherInfo(stable_id(*sub.key), sub.watcher, status, event))
        return out


def offline_pidf(owner: str, watcher: str) -> bytes:
    """The document a watcher gets of a user who is offline (for tests and docs)."""
    level = default_relationship(watcher, domain_part(owner))
    return render_pidf(owner, _filter(OFFLINE_VIEW, level))
