"""The presence service: PUBLISH and SUBSCRIBE/NOTIFY.

Wiring (:mod:`.feature`, built from :data:`conclave.wiring.FEATURES`)::

    presence = PresenceService(stack=..., local=..., settings=..., user_exists=users.exists,
                               load=lambda: read_directory(db, domain),
                               generation=lambda: GenerationStore(db).get(DIRECTORY))
    owner of SUBSCRIBE and PUBLISH; serves presence and presence.winfo
    jobs:  presence.run()             # the one timer task: expiries and merge windows
           presence.run_reload()      # contacts and privacy: load at start, then every
                                      # RELOAD_POLL_INTERVAL read the change counter and
                                      # reload only if it moved
    on SIGHUP: presence.reload()      # unconditional
    calls.tracker.add_listener(presence.set_in_call)
    after each user reload: presence.users_changed(enabled, disabled)

Until the first :meth:`PresenceService.reload` has loaded the contact lists
and privacy rules, requests are held (at most :data:`MAX_DEFERRED`, then
503): answering before the privacy rules are known could show a blocked
watcher the real state.

Module map: :mod:`.publications` (PUBLISH), :mod:`.subscriptions`
(SUBSCRIBE), :mod:`.notifier` (NOTIFY: merging, in flight, termination),
:mod:`.views` (documents and the privacy rule), :mod:`.directory` (contacts
and privacy in memory), :mod:`.state` (publications and subscriptions behind
an interface; what survives a restart), :mod:`.timers` (one deadline heap).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Set
from typing import Protocol

import structlog

from conclave.sip.errors import RemoteProtocolError
from conclave.sip.flow import Flow
from conclave.sip.ids import new_branch, new_tag
from conclave.sip.local import LocalEndpoint
from conclave.sip.message import Request
from conclave.sip.transaction import ServerTransaction
from conclave.store.generations import Reloader

from .directory import Directory
from .model import PresenceView
from .notifier import PUMP_SLICE, Notifier, NotifyStack
from .publications import Answer, Publications, new_etag
from .settings import PresenceSettings
from .state import (
    Kind,
    MemoryPresenceState,
    PresenceState,
    Publication,
    SharedPresenceState,
    SubKey,
)
from .subscriptions import Subscriptions
from .timers import Deadlines
from .views import Views

log = structlog.get_logger("conclave.services.presence")

MAX_DEFERRED = 1000
"""Requests held while the first load of contacts and privacy runs (a few ms)."""

PRUNE_INTERVAL = 60.0
"""Seconds between sweeps of refilled rate-limit buckets."""

RELOAD_POLL_INTERVAL = 5.0
"""Seconds between reads of the ``directory`` change counter. ``conclave
contacts …`` and ``conclave privacy …`` signal the server (SIGHUP), which
reloads at once; this poll only covers a missed signal, so it bounds how late
such a change can be. A poll is one primary-key SELECT; the full re-read (the
whole snapshot rebuilt on the event loop, seconds with 800,000 contact rows:
BENCHMARKS.md) runs only when the counter moved, that is after a change."""


class PresenceStack(NotifyStack, Protocol):
    """The part of :class:`~conclave.core.stack.SipStack` the service uses."""

    def respond(
        self,
        txn: ServerTransaction,
        status: int,
        reason: str | None = None,
        *,
        headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
        body: bytes = b"",
        to_tag: str | None = None,
    ) -> None: ...


class PresenceService:
    """SUBSCRIBE and PUBLISH for ``presence`` and ``presence.winfo``."""

    name = "presence"
    methods = frozenset({"SUBSCRIBE", "PUBLISH"})
    event_packages = frozenset({"presence", "presence.winfo"})

    def __init__(
        self,
        *,
        stack: PresenceStack,
        local: LocalEndpoint,
        settings: PresenceSettings,
        user_exists: Callable[[str], bool],
        load: Callable[[], Awaitable[Directory]] | None = None,
        generation: Callable[[], Awaitable[int]] | None = None,
        on_reloaded: Callable[[], object] | None = None,
        state: PresenceState | None = None,
        clock: Callable[[], float] = time.time,
        tags: Callable[[], str] = new_tag,
        branches: Callable[[], str] = new_branch,
        etags: Callable[[], str] = new_etag,
    ) -> None:
        self.stack = stack
        self.local = local
        self.settings = settings
        self.user_exists = user_exists
        self._load = load
        # Without ``generation`` every poll reloads (tests); with it, only a change does.
        self.reloader = Reloader("directory", self._reload_now, generation)
        self._on_reloaded = on_reloaded  # e.g. take the new snapshot out of GC scans
        self.state: PresenceState = state if state is not None else MemoryPresenceState()
        self.clock = clock
        self.directory = Directory(local.domain)
        self.loaded = load is None
        self.deadlines = Deadlines()
        self._in_call: set[str] = set()
        self._deferred: list[tuple[ServerTransaction, Request, str | None, Flow]] = []
        self._wake = asyncio.Event()
        self._next_prune = 0.0
        self.views = Views(
            self.state, lambda: self.directory, self._is_in_call, self.local_user, local.host
        )
        self.notifier = Notifier(
            stack=stack,
            local=local,
            state=self.state,
            views=self.views,
            window=settings.merge_window,
            clock=clock,
            new_branch=branches,
        )
        self.publications = Publications(
            self.state, settings, self.deadlines, self._presentity_changed, etags
        )
        self.subscriptions = Subscriptions(
            state=self.state,
            notifier=self.notifier,
            settings=settings,
            deadlines=self.deadlines,
            directory=lambda: self.directory,
            local_user=self.local_user,
            local=local,
            new_tag=tags,
        )
        if isinstance(self.state, SharedPresenceState):
            self.state.follow(self.shared_changed)

    # -- the owner of SUBSCRIBE and PUBLISH ---------------------------------------------------
    def knows_dialog(self, request: Request, flow: Flow) -> bool:
        """An in-dialog SUBSCRIBE on the flow its subscription was last
        refreshed on, from the subscription's watcher: no new credentials needed."""
        return self.subscriptions.knows(request, flow)

    def handle(
        self, txn: ServerTransaction, request: Request, *, user: str | None, flow: Flow
    ) -> None:
        if not self.loaded:
            if len(self._deferred) < MAX_DEFERRED:
                self._deferred.append((txn, request, user, flow))
            else:
                self.stack.respond(txn, 503, "Presence is starting", headers=[("Retry-After", "1")])
            return
        now = self.clock()
        watcher = request.from_aor
        if watcher is None:
            self.stack.respond(txn, 403, "From is not a local address of record")
            return
        try:
            if request.method == "PUBLISH":
                self._answer(txn, self.publications.handle(request, watcher, now))
            else:
                outcome = self.subscriptions.handle(request, watcher, flow, now)
                self._answer(txn, outcome.answer, to_tag=outcome.to_tag)
                if outcome.then is not None:
                    outcome.then()
        except RemoteProtocolError as exc:
            self.stack.respond(txn, exc.status, exc.reason, headers=exc.headers)
        self._after(now)

    def _answer(self, txn: ServerTransaction, answer: Answer, to_tag: str | None = None) -> None:
        self.stack.respond(txn, answer.status, answer.reason, headers=answer.headers, to_tag=to_tag)

    # -- facts from the rest of the server -------------------------------------------------
    def local_user(self, aor: str) -> bool:
        """True if ``aor`` is an enabled user of this server."""
        user, _, domain = aor.removeprefix("sip:").rpartition("@")
        return domain == self.local.domain and bool(user) and self.user_exists(user)

    def _is_in_call(self, aor: str) -> bool:
        return aor in self._in_call

    def set_in_call(self, aor: str, in_call: bool) -> None:
        """Call-tracker listener: ``aor`` entered or left every call through this server."""
        if in_call:
            self._in_call.add(aor)
        else:
            self._in_call.discard(aor)
        self._presentity_changed(aor)
        self._after(self.clock())

    def set_note(self, aor: str, note: str | None) -> PresenceView:
        """A note set through the web API (None: removed); watchers are told. Answers
        what the user's watchers at the most trusted level now see."""
        now = self.clock()
        self.publications.set_note(aor, note, now)
        self._after(now)
        return self.views.view(aor)

    def own_view(self, aor: str) -> PresenceView:
        """The aggregate of ``aor``'s publications, before any privacy filter."""
        return self.views.view(aor)

    def users_changed(self, enabled: Set[str], disabled: Set[str]) -> None:
        """The user list was reloaded: end what removed or disabled users had.

        ``enabled`` and ``disabled`` are user names (case-insensitive); a name
        in neither was removed. A watched user who was removed ends its
        watchers' subscriptions with ``reason=noresource``, one who was
        disabled with ``reason=deactivated``; a subscriber who was removed or
        disabled loses every subscription (``reason=rejected``) at once, and a
        removed or disabled user's publications are dropped.
        """
        on = {name.lower() for name in enabled}
        off = {name.lower() for name in disabled}
        domain = self.local.domain

        def gone(aor: str) -> str | None:
            user, _, host = aor.removeprefix("sip:").rpartition("@")
            if host != domain or user.lower() in on:
                return None
            return "deactivated" if user.lower() in off else "noresource"

        now = self.clock()
        stale_members: set[str] = set()
        for sub in self.state.all_subscriptions():
            if gone(sub.watcher) is not None:
                self.notifier.terminate(sub, "rejected")
            elif sub.kind is Kind.PRESENCE and (reason := gone(sub.owner)) is not None:
                self.notifier.terminate(sub, reason)
            elif sub.kind is Kind.LIST:
                stale_members.update(m for m in sub.members if gone(m) is not None)
        for aor in self.state.published():
            if gone(aor) is not None:
                self.publications.drop_user(aor)
        for aor in stale_members:
            self.notifier.changed(aor, now)
        self._after(now)

    # -- contacts and privacy ----------------------------------------------------------------
    async def reload(self) -> None:
        """Re-read contact lists and privacy rules now, changed or not (SIGHUP).

        Raises whatever the store raises; the previous snapshot stays in force.
        """
        await self.reloader.reload()

    async def reload_if_changed(self) -> bool:
        """Re-read them if the change counter moved since the last load (or none succeeded yet).

        Returns True if it reloaded. Raises whatever the store raises; the
        previous snapshot stays in force and the next poll tries again.
        """
        return await self.reloader.reload_if_changed()

    async def _reload_now(self) -> None:
        if self._load is not None:
            self.apply_directory(await self._load())
            if self._on_reloaded is not None:
                self._on_reloaded()
        if not self.loaded:
            self.loaded = True
            log.info("presence loaded", users_with_contacts=len(self.directory.contacts))
            deferred, self._deferred = self._deferred, []
            for txn, request, user, flow in deferred:
                self.handle(txn, request, user=user, flow=flow)

    def apply_directory(self, new: Directory) -> None:
        """Swap in a new snapshot and tell every subscription what it changes.

        A contact list that changed gets a full-state RLMI NOTIFY (RFC 4662
        partial state cannot remove a resource); a pending watcher the owner
        now allows becomes active; any subscription whose owner changed a
        privacy rule is re-checked (NOTIFYs go out only if what the watcher
        may see changed: the rule in :mod:`.views`).
        """
        old = self.directory
        if new == old:
            return
        self.directory = new
        now = self.clock()
        owners = set(old.privacy) | set(new.privacy)
        rules_changed = {o for o in owners if old.privacy.get(o) != new.privacy.get(o)}
        for sub in self.state.all_subscriptions():
            if sub.kind is Kind.LIST:
                members = frozenset(new.contacts_of(sub.owner))
                if new.contacts_of(sub.owner) != old.contacts_of(sub.owner):
                    changed = members ^ sub.members
                    self.state.set_members(sub, members)
                    for aor in changed:
                        self.notifier.winfo_changed(aor, now)
                    self.notifier.notify_full(sub)
                    continue
            if sub.pending and not self.subscriptions.is_pending(sub.kind, sub.owner, sub.watcher):
                sub.pending = False
                sub.approved_later = True
                self.notifier.winfo_changed(sub.owner, now)
                self.notifier.notify_full(sub)
                continue
            affected = sub.resources & rules_changed
            if affected:
                self.notifier.recheck(sub, affected, now)
        self._after(now)

    async def run_reload(self, interval: float = RELOAD_POLL_INTERVAL) -> None:
        """Load now, then every ``interval`` seconds reload if the counter moved, until cancelled.

        Until the first load succeeds it is retried every half second at most
        (requests are held meanwhile).
        """
        while True:
            try:
                await self.reload_if_changed()
            except Exception as exc:  # keep serving the last snapshot; retry soon
                log.warning("presence reload failed", reason=str(exc))
            await asyncio.sleep(interval if self.loaded else min(interval, 0.5))

    def shared_changed(
        self, aor: str, added: list[Publication], removed: list[Publication]
    ) -> None:
        """Another Front End of the pool changed ``aor``'s publications (already in
        :attr:`state`): keep their expiry timers and tell our watchers."""
        for pub in removed:
            self.deadlines.cancel(("pub", pub.etag))
        for pub in added:
            self.deadlines.schedule(("pub", pub.etag), pub.expires_at)
        self._presentity_changed(aor)
        self._after(self.clock())

    # -- timers ------------------------------------------------------------------------------
    def _presentity_changed(self, aor: str) -> None:
        if self.views.refresh(aor):
            self.notifier.changed(aor, self.clock())

    def next_deadline(self) -> float | None:
        candidates = [d for d in (self.deadlines.next(), self.notifier.next_deadline()) if d]
        return min(candidates, default=None)

    def tick(self, now: float | None = None) -> None:
        """Fire every due expiry and merge-window check (the run task calls this)."""
        now = self.clock() if now is None else now
        for key in self.deadlines.due(now):
            assert isinstance(key, tuple)
            kind, ident = key
            if kind == "pub":
                self.publications.expire(ident, now)
            else:
                sub_key: SubKey = ident
                self.subscriptions.expire(sub_key, now)
        self.notifier.pump(now, PUMP_SLICE)

    def _after(self, now: float) -> None:
        # One slice now; the run task sends the rest, yielding to other traffic between slices.
        self.notifier.pump(now, PUMP_SLICE)
        self._wake.set()

    async def run(self) -> None:
        """The one timer task: sleep until the next deadline (or a change), then tick."""
        while True:
            self._wake.clear()
            deadline = self.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            if timeout is None or timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            else:
                await asyncio.sleep(0)  # a fan-out in slices: let other traffic in between
            self.tick()
            now = self.clock()
            if now >= self._next_prune:
                self._next_prune = now + PRUNE_INTERVAL
                self.publications.limiter.prune(now)

    # -- inspection --------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        return {
            "publications": self.state.publication_count(),
            "subscriptions": self.state.subscription_count(),
            "notify_in_flight": self.notifier.in_flight(),
            "notifies_sent": self.notifier.sent,
        }
