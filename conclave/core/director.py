"""The Director's routing: authenticate first, then send each user to their home pool.

A Director (Lync's Director role, docs/edge.md) stands between the Edge and
the Front End pools. It is the core :class:`~conclave.core.router.Router`
with two differences:

* **nothing reaches a pool unauthenticated.** Every out-of-dialog request is
  authenticated here (digest, the same lockout, bans and anti-enumeration as
  a Front End, with the client address the Edge reports), so a flood of bad
  passwords ends at the Director (it absorbs the flood; the ban goes back to
  the Edge);
* **no registrar and no location service.** A request goes to the *home
  pool* of the user it belongs to (REGISTER and everything a user sends: the
  sender's; a partner's request: the target's), over mutual TLS, with
  ``Conclave-Authenticated: USER``, which a Front End believes only on a
  trusted Director's connection and then does not challenge again.

The Director record-routes dialogs like any proxy, so in-dialog requests
travel along the dialog's recorded flows and nowhere else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Protocol

import structlog

from conclave.sip.flow import Flow
from conclave.sip.message import Request
from conclave.sip.transaction import ServerTransaction
from conclave.sip.uri import SipURI

from .features import Exchange
from .locations import Binding
from .proxy import Target
from .router import KNOWN_METHODS, PARTNER_HEADER, Router
from .signin import AUTHENTICATED_HEADER

log = structlog.get_logger("conclave.director")

RETRY_AFTER_UNREACHABLE = "30"


class HomePools(Protocol):
    """Where each user lives and how to reach that pool."""

    def home(self, user: str) -> str | None:
        """The name of the pool whose back end holds ``user``."""
        ...

    def flow(self, pool: str) -> Flow | None:
        """An open connection to the pool, if there is one."""
        ...

    def connect(self, pool: str) -> Awaitable[Flow]:
        """Open one (raises on failure)."""
        ...


class NoLocations:
    """A Director keeps no registrations: the home pool's registrar does."""

    def lookup(self, aor: str, now: float) -> Sequence[Binding]:
        return ()

    def remove_binding(self, aor: str, binding: Binding) -> bool:
        return False


class DirectorRouter(Router):
    """The Router of a Director process (see the module docstring)."""

    def __init__(self, *args: object, homes: HomePools, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.homes = homes
        # Everything a Front End serves passes through (to the home pool, authenticated).
        self.allowed = frozenset(KNOWN_METHODS)

    def _register(self, txn: ServerTransaction, request: Request, flow: Flow) -> None:
        if not self.local.is_my_domain(request.uri) and not self.local.is_me(request.uri):
            self.stack.respond(txn, 404, "Not a domain served here")
            return
        user = self.signin.identify(txn, request, flow, proxy=False)
        if user is None:
            return
        to = request.to_addr.uri
        if not isinstance(to, SipURI) or to.user is None or to.user.lower() != user.lower():
            self.stack.respond(txn, 403, "To does not match the authenticated user")
            return
        exchange = Exchange(txn, request, flow, self._aor(user), user, stack=self.stack)
        self._accepted(exchange)
        self._to_home(exchange, user)

    def _deliver(self, exchange: Exchange) -> None:
        """An authenticated request for a local user: to the sender's home pool (a
        partner's request: to the target's)."""
        if exchange.user is not None:
            self._to_home(exchange, exchange.user)
            return
        uri = exchange.request.uri
        assert isinstance(uri, SipURI) and uri.user is not None
        self._to_home(exchange, uri.user)

    def _to_home(self, exchange: Exchange, user: str) -> None:
        pool = self.homes.home(user)
        if pool is None:
            self.stack.respond(exchange.txn, 404, "No such user")
            return
        request = exchange.request
        request.headers.remove("Authorization")  # consumed here (RFC 3261 §22.3)
        if exchange.user is not None:
            vouch = ((AUTHENTICATED_HEADER, exchange.user),)
        else:  # a federated partner's request, vouched for by the Edge
            sender = request.from_addr.uri
            host = sender.host.lower() if isinstance(sender, SipURI) else ""
            vouch = ((PARTNER_HEADER, host),)
        flow = self.homes.flow(pool)
        if flow is not None:
            self._forward_home(exchange, flow, vouch)
            return
        self.host.spawn(self._connect_home(exchange, pool, vouch))

    async def _connect_home(
        self, exchange: Exchange, pool: str, vouch: tuple[tuple[str, str], ...]
    ) -> None:
        try:
            flow = await self.homes.connect(pool)
        except Exception as exc:  # any failure: the sender gets a prompt 503
            log.warning("home pool unreachable", pool=pool, reason=str(exc))
            self.stack.respond(
                exchange.txn,
                503,
                "Home pool unreachable",
                headers=[("Retry-After", RETRY_AFTER_UNREACHABLE)],
            )
            return
        self._forward_home(exchange, flow, vouch)

    def _forward_home(
        self, exchange: Exchange, flow: Flow, vouch: tuple[tuple[str, str], ...]
    ) -> None:
        request = exchange.request
        self.proxy.forward(
            exchange.txn,
            request,
            [Target(request.uri, flow)],
            inbound=exchange.flow,
            sender=exchange.sender,
            extra_headers=vouch,
        )
