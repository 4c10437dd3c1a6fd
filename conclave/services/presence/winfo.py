"""Watcher information (RFC 3857 event package ``presence.winfo``, RFC 3858 format).

A user subscribes to their own ``presence.winfo`` to learn who watches them
(and who waits for approval). The service keeps a per-resource version
counter (RFC 3858 §4.2: incremented by one for each document sent on a
subscription) and calls :func:`render_watcherinfo` for each NOTIFY.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from conclave.services.presence.pidf import XML_DECLARATION, xml_attr, xml_text

WATCHERINFO_CONTENT_TYPE = "application/watcherinfo+xml"
WATCHERINFO_NS = "urn:ietf:params:xml:ns:watcherinfo"

WATCHER_STATUSES = frozenset({"pending", "active", "waiting", "terminated"})
"""Subscription states of RFC 3857 §3.4."""

WATCHER_EVENTS = frozenset(
    {
        "subscribe",
        "approved",
        "deactivated",
        "probation",
        "rejected",
        "timeout",
        "giveup",
        "noresource",
    }
)
"""State-change events of RFC 3857 §3.5 (the ``event`` attribute)."""


@dataclass(frozen=True, slots=True)
class WatcherInfo:
    """One watcher of a resource: one subscription and its state (RFC 3858 §4.3).

    ``id`` must identify the subscription and stay the same across documents
    (a hash of the dialog id, say); ``watcher`` is the watcher's URI.
    Raises ValueError for a status or event RFC 3857 does not define.
    """

    id: str
    watcher: str
    status: str
    """"pending", "active", "waiting" or "terminated"."""
    event: str
    """What last changed the state: "subscribe", "approved", "timeout", "rejected", ..."""
    display_name: str | None = None
    expiration: int | None = None
    """Seconds until the subscription expires, if known."""
    duration_subscribed: int | None = None
    """Seconds the watcher has been subscribed, if known."""

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a watcher needs a non-empty id")
        if self.status not in WATCHER_STATUSES:
            raise ValueError(f"invalid watcher status {self.status!r}")
        if self.event not in WATCHER_EVENTS:
            raise ValueError(f"invalid watcher event {self.event!r}")
        for name in ("expiration", "duration_subscribed"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")


def _watcher_line(w: WatcherInfo) -> str:
    attrs = [f'id="{xml_attr(w.id)}"', f'status="{w.status}"', f'event="{w.event}"']
    if w.display_name:
        attrs.append(f'display-name="{xml_attr(w.display_name)}"')
    if w.expiration is not None:
        attrs.append(f'expiration="{w.expiration}"')
    if w.duration_subscribed is not None:
        attrs.append(f'duration-subscribed="{w.duration_subscribed}"')
    return f"    <watcher {' '.join(attrs)}>{xml_text(w.watcher)}</watcher>"


def render_watcherinfo(
    resource: str,
    version: int,
    watchers: Sequence[WatcherInfo],
    *,
    full: bool = True,
    package: str = "presence",
) -> bytes:
    """A ``watcherinfo`` document for one resource (the body of a winfo NOTIFY).

    ``full=True`` lists every watcher (send it first on each subscription and
    whenever the subscriber asks again); ``full=False`` lists only the
    watchers whose state changed since the previous document (RFC 3858 §4.2).
    Watchers appear in the order given. Deterministic for equal arguments.
    """
    if version < 0:
        raise ValueError("the watcherinfo version must not be negative")
    state = "full" if full else "partial"
    lines = [
        XML_DECLARATION,
        f'<watcherinfo xmlns="{WATCHERINFO_NS}" version="{version}" state="{state}">',
        f'  <watcher-list resource="{xml_attr(resource)}" package="{xml_attr(package)}">',
        *(_watcher_line(w) for w in watchers),
        "  </watcher-list>",
        "</watcherinfo>",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")
