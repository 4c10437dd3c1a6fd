"""Presence (SIMPLE): the state model, privacy, and the bodies it travels in.

This package holds the pure parts of presence; the SUBSCRIBE/PUBLISH/NOTIFY
service builds on them:

* :mod:`.model`: :class:`Availability`, :class:`DeviceState`,
  :class:`PresenceView`, :func:`aggregate` (devices -> one view),
  :class:`Relationship` and :func:`filter_view` (the privacy matrix),
  :func:`resolve_relationship` (per-contact and per-domain rules);
* :mod:`.pidf`: :func:`parse_pidf` (safe, bounded; :class:`PidfError` -> 400)
  and :func:`render_pidf` (deterministic full-state bodies);
* :mod:`.winfo`: :func:`render_watcherinfo` (RFC 3857/3858);
* :mod:`.rlmi`: :func:`render_rlmi_multipart` (RFC 4662 list notifications).

Contact lists and privacy rules are persisted by
:mod:`conclave.store.contacts`. The rules are documented in ``docs/presence.md``.
"""

from __future__ import annotations

from conclave.services.presence.model import (
    OFFLINE_VIEW,
    VISIBLE_ITEMS,
    Availability,
    DeviceState,
    PresenceView,
    Relationship,
    aggregate,
    canonical_aor,
    default_relationship,
    domain_of,
    filter_view,
    resolve_relationship,
)
from conclave.services.presence.pidf import (
    MAX_PIDF_SIZE,
    MAX_XML_DEPTH,
    MAX_XML_ELEMENTS,
    PIDF_CONTENT_TYPE,
    PidfError,
    parse_pidf,
    render_pidf,
)
from conclave.services.presence.rlmi import (
    RLMI_CONTENT_TYPE,
    ResourcePart,
    render_rlmi_multipart,
    split_multipart,
)
from conclave.services.presence.winfo import (
    WATCHERINFO_CONTENT_TYPE,
    WatcherInfo,
    render_watcherinfo,
)

__all__ = [
    "MAX_PIDF_SIZE",
    "MAX_XML_DEPTH",
    "MAX_XML_ELEMENTS",
    "OFFLINE_VIEW",
    "PIDF_CONTENT_TYPE",
    "RLMI_CONTENT_TYPE",
    "VISIBLE_ITEMS",
    "WATCHERINFO_CONTENT_TYPE",
    "Availability",
    "DeviceState",
    "PidfError",
    "PresenceView",
    "Relationship",
    "ResourcePart",
    "WatcherInfo",
    "aggregate",
    "canonical_aor",
    "default_relationship",
    "domain_of",
    "filter_view",
    "parse_pidf",
    "render_pidf",
    "render_rlmi_multipart",
    "render_watcherinfo",
    "resolve_relationship",
    "split_multipart",
]
