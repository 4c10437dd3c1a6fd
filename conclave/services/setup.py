"""What a feature's ``build`` function gets: the configuration and the shared parts.

Each feature package has ``build(setup) -> Feature | None``: None when the
configuration leaves it off, so it is never constructed and registers
nothing. :data:`conclave.wiring.FEATURES` lists the builders in order; a
feature that depends on another finds it in :attr:`Setup.built`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from conclave.config import Config
from conclave.core.features import Feature, FeatureHost
from conclave.store.database import Database

from .location import MemoryLocationService
from .presence.state import PresenceState


@dataclass
class Setup:
    config: Config
    data_dir: Path
    db: Database
    host: FeatureHost
    location: MemoryLocationService
    pool_member: bool = False
    """A member of an Enterprise pool: other Front Ends share the back end and the state."""
    presence_state: PresenceState | None = None
    """A pool's shared presence state (:mod:`conclave.cluster`); None: presence keeps its own."""
    built: dict[str, Feature] = field(default_factory=dict)
    """Features built so far, by name (a later one may depend on an earlier one)."""
