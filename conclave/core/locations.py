"""Where a user's devices are: the location service as the core sees it.

The registrar feature writes bindings; the router reads them to deliver a
request (RFC 3261 §16.5). The core needs only this read side; the concrete
service (in memory with write-behind to the store today, Redis-backed in a
pool) is chosen by the wiring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from conclave.sip.flow import Flow
from conclave.sip.uri import URI


class Binding(Protocol):
    """One registered device: its contact URI, the flow it registered on, and
    the Path it registered through (RFC 3327: the proxies, outermost last, that
    asked to stay on the way to it; empty when it registered directly)."""

    @property
    def uri(self) -> URI: ...

    @property
    def flow(self) -> Flow | None: ...

    @property
    def path(self) -> tuple[str, ...]: ...


class Locations(Protocol):
    """Read access to registrations, and the one removal routing may make."""

    def lookup(self, aor: str, now: float) -> Sequence[Binding]:
        """The reachable bindings of ``aor`` at wall-clock ``now``, best first."""
        ...

    def remove_binding(self, aor: str, binding: Binding) -> bool:
        """Forget ``binding`` (one :meth:`lookup` returned): its flow failed (RFC 5626
        §5.3: 430 from the edge proxy that held it). False if it was gone already."""
        ...
