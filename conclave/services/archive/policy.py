"""Who is archived: global, site, pool and user policies, each with two switches.

Each level may set ``internal`` (conversations among users of this
deployment) and ``federated`` (conversations with users of other domains)
to on or off, or leave them unset to inherit. A switch is resolved for a
user from the most specific level that sets it::

    user  >  pool (the user's home pool)  >  site  >  global ([archive] in conclave.toml)

The global level always sets both. Site, pool and user levels live in the
database (``conclave archive policy set``) and are read into memory by the
server, so a decision on the message path is a few dictionary look-ups.

A conversation is archived when the resolved switch (internal or
federated, by the kind of conversation) is on for *any* local party: if
alice is archived, everything she sends or receives is, whoever the other
party is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Scope = Literal["user", "pool", "site"]
SCOPES: tuple[Scope, ...] = ("user", "pool", "site")
"""Levels stored as overrides, most specific first; the global level is config."""


@dataclass(frozen=True)
class Switches:
    """One level's setting; None means "inherit from the level above"."""

    internal: bool | None = None
    federated: bool | None = None


@dataclass(frozen=True)
class Override:
    """A stored policy for one user, pool or site."""

    scope: Scope
    name: str
    """``user@domain`` for a user; the pool's or site's name otherwise."""
    switches: Switches


@dataclass(frozen=True)
class Resolved:
    """A user's effective policy, and which level decided each switch."""

    internal: bool
    internal_from: str
    federated: bool
    federated_from: str


class ArchivePolicy:
    """Resolves the policy for a user; replace the overrides with :meth:`load`."""

    def __init__(
        self,
        *,
        internal: bool,
        federated: bool,
        site: str = "default",
        pool: str = "default",
        overrides: Iterable[Override] = (),
    ) -> None:
        self.global_switches = Switches(internal, federated)
        self.site = site
        self.pool = pool
        self._by_key: dict[tuple[str, str], Switches] = {}
        self.load(overrides)

    def load(self, overrides: Iterable[Override]) -> None:
        """Replace every stored override at once (user names compare case-insensitively
        in their domain part only, as AORs do)."""
        self._by_key = {(o.scope, _key(o.scope, o.name)): o.switches for o in overrides}

    @property
    def overrides(self) -> Mapping[tuple[str, str], Switches]:
        return self._by_key

    def resolve(self, user: str, *, pool: str | None = None, site: str | None = None) -> Resolved:
        """The effective switches of ``user`` (``name@domain``), homed on this server's
        pool and site unless told otherwise."""
        levels = (
            ("user", _key("user", user)),
            ("pool", pool or self.pool),
            ("site", site or self.site),
        )
        found: dict[str, tuple[bool, str]] = {}
        for scope, name in levels:
            switches = self._by_key.get((scope, name))
            if switches is None:
                continue
            for switch in ("internal", "federated"):
                value = getattr(switches, switch)
                if value is not None and switch not in found:
                    found[switch] = (value, f"{scope} {name}")
        internal = found.get("internal", (bool(self.global_switches.internal), "global"))
        federated = found.get("federated", (bool(self.global_switches.federated), "global"))
        return Resolved(internal[0], internal[1], federated[0], federated[1])

    def archives(self, user: str, *, federated: bool) -> bool:
        """Whether ``user``'s policy archives this kind of conversation."""
        resolved = self.resolve(user)
        return resolved.federated if federated else resolved.internal

    def conversation(self, local_parties: Iterable[str], *, federated: bool) -> bool:
        """Whether a conversation with these local parties (``name@domain``) is archived."""
        return any(self.archives(user, federated=federated) for user in local_parties)


def _key(scope: str, name: str) -> str:
    if scope != "user":
        return name
    local, at, domain = name.rpartition("@")
    return f"{local}@{domain.lower()}" if at else name
