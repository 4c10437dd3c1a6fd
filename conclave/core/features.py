"""The one shape every feature takes, and the hook points it can use.

The router keeps routing (which domain, in or out of a dialog), authentication
and the proxy. Everything else -- the registrar, instant messages and their
offline store, archiving, call detail records, call tracking, presence, and
the roles still to come -- is a *feature*: an object that, when the
configuration enables it, registers with a :class:`FeatureHost` at start-up.
A feature that is not enabled is never built, registers nothing, and appears
in no Allow or Allow-Events header (the wsproto rule in STYLE.md).

Registration is Prosody's ``module:hook`` in typed form. A feature may:

* **own methods** (:meth:`Registry.owns`): REGISTER, or PUBLISH/SUBSCRIBE. The
  router authenticates the request, then hands the owner an :class:`Exchange`
  that it must answer exactly once;
* **serve event packages** (:meth:`Registry.serves`), listed in Allow-Events;
* **hook named points of the request path**, in this order:

  1. :data:`ACCEPTED` -- the sender is known (authenticated, or speaking on
     its dialog's flow) and the router will handle the request. Features
     watch outcomes here with :meth:`Exchange.when_answered` (CDRs, calls);
  2. :data:`BEFORE_DELIVERY` -- the request is about to be delivered to a
     user or relayed along a dialog. A hook may return an awaitable that
     holds delivery until it resolves: ``None`` lets it go on, a
     :class:`Refusal` answers the sender instead (archiving in critical
     mode);
  3. :data:`UNREACHABLE` -- the target user has no reachable device. The
     first hook that takes the request over (returns True) answers it (the
     offline message store); with none, the router answers 480;
  4. the final response -- through :meth:`Exchange.when_answered`.

Features call back only through what the host hands them: the stack (send a
request, answer a transaction), the location service, this server's
endpoint, the user directory, and :meth:`FeatureHost.spawn` for background
work that a graceful stop must wait for. Adding a feature touches its own
package and one line in :data:`conclave.wiring.FEATURES`, where each
feature's ``build(setup)`` returns it, or None when it is off.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Coroutine, Set
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from conclave.sip.flow import Flow
from conclave.sip.local import LocalEndpoint
from conclave.sip.message import Request, Response
from conclave.sip.transaction import ServerTransaction

from .dialogs import Hop
from .dialogs import Refusal as Refusal  # re-exported: what gates answer
from .locations import Binding, Locations
from .stack import SipStack

log = structlog.get_logger("conclave.core")


@dataclass(eq=False)
class Exchange:
    """One request the router accepted, as features see it."""

    txn: ServerTransaction
    request: Request
    flow: Flow
    sender: str
    """The sender's address of record (``sip:user@domain``, stored spelling)."""
    user: str | None
    """The local user the sender authenticated as; None when it was known by
    its dialog's flow instead (an in-dialog request needs no credentials)."""
    target: str | None = None
    """The recipient's address of record, for a request to a local user."""
    hop: Hop | None = None
    """For an in-dialog request: the dialog and the side that sent it."""
    stack: SipStack | None = field(default=None, repr=False)

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def in_dialog(self) -> bool:
        return self.hop is not None

    def when_answered(self, listener: Callable[[Response], None]) -> None:
        """Call ``listener`` with the final response sent on this transaction,
        whoever sends it (the owner, the proxy, or the router)."""
        assert self.stack is not None
        self.stack.when_answered(self.txn, listener)


class Hook(enum.Enum):
    ACCEPTED = "accepted"
    BEFORE_DELIVERY = "before_delivery"
    UNREACHABLE = "unreachable"


ACCEPTED = Hook.ACCEPTED
BEFORE_DELIVERY = Hook.BEFORE_DELIVERY
UNREACHABLE = Hook.UNREACHABLE

Accepted = Callable[[Exchange], None]
Gate = Callable[[Exchange], Awaitable[Refusal | None] | None]
Takeover = Callable[[Exchange], bool]
Handler = Callable[[Exchange], None]
DialogCheck = Callable[[Request, Flow], bool]


class UserDirectory(Protocol):
    """Who the local users are (the authenticator's in-memory cache)."""

    def exists(self, user: str) -> bool: ...
    def canonical(self, user: str) -> str | None: ...


class Registry:
    """What features registered: owned methods, event packages, hooks."""

    def __init__(self) -> None:
        self.owners: dict[str, Handler] = {}
        self.dialog_checks: dict[str, DialogCheck] = {}
        self.packages: list[str] = []
        self.accepted: list[Accepted] = []
        self.gates: list[Gate] = []
        self.takeovers: list[Takeover] = []

    def owns(
        self, method: str, handler: Handler, *, knows_dialog: DialogCheck | None = None
    ) -> None:
        """``handler`` answers every ``method`` request the router accepts
        (out of dialog to a local address, or in a dialog this server is a
        party to). One owner per method.

        ``knows_dialog(request, flow)``: True when an in-dialog request
        belongs to a dialog the owner keeps and arrives on that dialog's
        recorded flow from its remote party. Such a request needs no new
        credentials (the rule for every dialog: docs/security.md), so its
        :attr:`Exchange.user` is None. Anything else is authenticated.
        """
        if method in self.owners:
            raise ValueError(f"{method} already has an owner")
        self.owners[method] = handler
        if knows_dialog is not None:
            self.dialog_checks[method] = knows_dialog

    def serves(self, package: str) -> None:
        """An event package (RFC 6665) this feature serves: Allow-Events lists it."""
        if package not in self.packages:
            self.packages.append(package)

    def hook(self, point: Hook, fn: Callable[[Exchange], object]) -> None:
        """Run ``fn`` at ``point`` of the request path, after the hooks
        registered before it (features register in :data:`FEATURES` order)."""
        if point is Hook.ACCEPTED:
            self.accepted.append(fn)  # type: ignore[arg-type]
        elif point is Hook.BEFORE_DELIVERY:
            self.gates.append(fn)  # type: ignore[arg-type]
        else:
            self.takeovers.append(fn)  # type: ignore[arg-type]


@dataclass(eq=False)
class FeatureHost:
    """What the core hands a feature: registration, and the few things it may call."""

    registry: Registry
    stack: SipStack
    local: LocalEndpoint
    location: Locations
    users: UserDirectory
    device_flow: Callable[[Binding], Flow | None] = field(default=lambda binding: binding.flow)
    """The connection a request for ``binding`` goes on: its own, or (a remote user
    behind an Edge) a connection with the Edge its Path starts at."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, coro: Coroutine[object, object, None]) -> None:
        """Run ``coro`` as a task that a graceful stop waits for; its failure is
        logged when it happens (not whenever the task is collected)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background work failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)

    def pending(self) -> int:
        """Background work still running (an answer waiting on a store write)."""
        return len(self._tasks)

    async def settle(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Feature:
    """Base of every feature: override what it needs. Not enabled, not built."""

    name = "feature"

    def register(self, host: FeatureHost) -> None:
        """Own methods, serve packages, hook points (called once at start-up)."""

    def jobs(self) -> list[Coroutine[object, object, None]]:
        """Coroutines to run as tasks for as long as the server runs."""
        return []

    async def start(self) -> None:
        """Load what the feature needs before the server says it is ready."""

    async def reload(self) -> None:
        """SIGHUP: re-read what can change while running."""

    def users_changed(self, enabled: Set[str], disabled: Set[str]) -> None:
        """The user list was re-read: ``enabled`` and ``disabled`` local names."""

    def stats(self) -> dict[str, int]:
        """Counters for the metrics endpoint (e.g. ``subscriptions``)."""
        return {}

    async def close(self) -> None:
        """Graceful stop: finish or hand back outstanding work."""
