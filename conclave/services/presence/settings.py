"""The presence service's settings (the ``[presence]`` section of conclave.toml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEFAULT_MIN_EXPIRES = 60
"""Shortest publication or subscription granted; shorter requests get 423."""
DEFAULT_EXPIRES = 3600
"""RFC 3856 §6.4 and RFC 3903 §4.1 suggest one hour for presence."""
DEFAULT_MAX_EXPIRES = 7200
"""Longer requests are shortened: a subscriber that vanished without closing
its connection (UDP, or a NAT that ate it) is forgotten within two hours."""
DEFAULT_PUBLISH_RATE = 1.0
"""State-changing PUBLISHes per second a user may sustain. A person changes
state a few times an hour; a client bug can change it a thousand times a
second, and each change fans out to every watcher."""
DEFAULT_PUBLISH_BURST = 10
"""PUBLISHes a user may send at once (signing in on several devices)."""
DEFAULT_MERGE_WINDOW = 0.2
"""Changes reaching one watcher within this many seconds go out as one NOTIFY."""

ExternalPolicy = Literal["pending", "allow"]


@dataclass(frozen=True)
class PresenceSettings:
    """Limits and policy; see the ``[presence]`` section's documentation in config.py."""

    min_expires: int = DEFAULT_MIN_EXPIRES
    default_expires: int = DEFAULT_EXPIRES
    max_expires: int = DEFAULT_MAX_EXPIRES
    publish_rate: float = DEFAULT_PUBLISH_RATE
    publish_burst: int = DEFAULT_PUBLISH_BURST
    merge_window: float = DEFAULT_MERGE_WINDOW
    external_watchers: ExternalPolicy = "pending"
    """``pending``: a watcher from another domain waits until the user names
    it in a privacy rule or a contact list; ``allow``: it sees External at once."""
