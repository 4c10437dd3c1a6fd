"""Presence as a feature: it owns PUBLISH and SUBSCRIBE and serves two event packages.

Built only when ``[presence] enabled``; then it registers
:class:`~conclave.services.presence.service.PresenceService` as the owner of
its methods, follows the call tracker for "In a call" when calls are
tracked, and runs the service's two tasks (the deadline timer and the
contact/privacy reloads).
"""

from __future__ import annotations

from collections.abc import Coroutine, Set
from typing import TYPE_CHECKING

from conclave.core.features import Exchange, Feature, FeatureHost
from conclave.ops.gcpause import settle_heap
from conclave.store.generations import DIRECTORY, GenerationStore

from .directory import read_directory
from .model import PresenceView
from .service import PresenceService
from .settings import PresenceSettings

if TYPE_CHECKING:
    from conclave.services.setup import Setup


class PresenceFeature(Feature):
    name = "presence"

    def __init__(self, service: PresenceService) -> None:
        self.service = service

    def register(self, host: FeatureHost) -> None:
        for method in sorted(self.service.methods):
            check = self.service.knows_dialog if method == "SUBSCRIBE" else None
            host.registry.owns(method, self.handle, knows_dialog=check)
        for package in sorted(self.service.event_packages):
            host.registry.serves(package)

    def handle(self, exchange: Exchange) -> None:
        # Authenticated as exchange.user, or (user None) a refresh that came
        # on its subscription's own flow: the watcher is the From either way.
        self.service.handle(exchange.txn, exchange.request, user=exchange.user, flow=exchange.flow)

    def jobs(self) -> list[Coroutine[object, object, None]]:
        return [self.service.run(), self.service.run_reload()]

    async def reload(self) -> None:
        await self.service.reload()

    def users_changed(self, enabled: Set[str], disabled: Set[str]) -> None:
        self.service.users_changed(enabled, disabled)

    def stats(self) -> dict[str, int]:
        return self.service.stats()

    def set_note(self, aor: str, note: str | None) -> PresenceView:
        """A note set through the web API (None removes it)."""
        return self.service.set_note(aor, note)

    def own_view(self, aor: str) -> PresenceView:
        return self.service.own_view(aor)


def build(setup: Setup) -> PresenceFeature | None:
    """On when ``[presence] enabled`` (the default for Standard Edition)."""
    c = setup.config
    if not c.presence.enabled:
        return None
    domain, db, host = c.server.domain, setup.db, setup.host
    service = PresenceService(
        stack=host.stack,
        local=host.local,
        settings=PresenceSettings(
            min_expires=c.presence.min_expires,
            default_expires=c.presence.default_expires,
            max_expires=c.presence.max_expires,
            publish_rate=c.presence.publish_rate,
            publish_burst=c.presence.publish_burst,
            merge_window=c.presence.notify_merge_window,
            external_watchers=c.presence.external_watchers,
        ),
        user_exists=host.users.exists,
        # Contacts and privacy are read into memory by run_reload; requests wait
        # for that first load, later ones follow the "directory" counter.
        load=lambda: read_directory(db, domain),
        generation=lambda: GenerationStore(db).get(DIRECTORY),
        on_reloaded=settle_heap,  # the snapshot lives until the next change
        state=setup.presence_state,
    )
    calls = setup.built.get("calls")
    if calls is not None:
        from conclave.services.calls import CallsFeature

        assert isinstance(calls, CallsFeature)
        calls.tracker.add_listener(service.set_in_call)
    return PresenceFeature(service)
