"""The transaction user: who handles each request.

For every new request the router decides, in this order (RFC 3261 §16.3,
§16.4 and the Lync security model):

1. **Draining**: during a graceful stop, new out-of-dialog work gets 503.
2. **Loose routing**: our own Route entries are removed; the first one's
   user part names the dialog (:mod:`conclave.core.dialogs`).
3. **In-dialog requests** (To tag) travel only along a dialog we
   record-routed: its Call-ID, tags, From and To must be the dialog's, and it
   must arrive on the sender's recorded flow or authenticate as that party
   (407). It goes to the other party's recorded flow, or gets 430 if that
   flow is gone: never to a contact found from what the request says. A
   dialog in which this server is a party goes to the feature that owns the
   method.
4. **Out-of-dialog requests**: unknown methods 501, disabled ones 405;
   REGISTER and OPTIONS to the server itself; no relaying to other domains
   and no requests from them (federation is off: 403); authentication
   (:mod:`conclave.core.signin`), and the authenticated user must be the
   From user (403); a user named in any case is the stored user.

Then the request is *accepted*, and features take part through the hook
points of :mod:`conclave.core.features`: the owner of the method answers it
(REGISTER, PUBLISH, SUBSCRIBE); anything else is delivered to the target
user's devices by the proxy, after the BEFORE_DELIVERY gates (archiving);
a target with no reachable device is offered to the UNREACHABLE hooks (the
offline store), else 480; 404 for an unknown user.

Responses that match no transaction are dropped, except a 2xx to an INVITE
of a dialog we opened (:meth:`Proxy.on_stray_response`). The router imports
no feature: what is enabled is what registered.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from conclave.ops import metrics
from conclave.pki.identity import requires_tls
from conclave.sip.address import aor_of
from conclave.sip.errors import RemoteProtocolError
from conclave.sip.flow import Flow
from conclave.sip.ids import new_branch
from conclave.sip.local import LocalEndpoint
from conclave.sip.message import Request, Response
from conclave.sip.transaction import ServerTransaction
from conclave.sip.uri import SipURI, TelURI
from conclave.sip.validate import check_extensions

from .dialogs import Hop, Refusal
from .features import Exchange, FeatureHost
from .locations import Binding
from .proxy import Proxy, Target
from .signin import SignIn

log = structlog.get_logger("conclave.router")

CORE_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "MESSAGE", "INFO", "UPDATE", "PRACK")
"""Methods the core itself routes, whatever is enabled."""

METHOD_ORDER = (
    "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "MESSAGE", "INFO", "UPDATE", "PRACK",
)  # fmt: skip
"""How Allow lists methods: these first, in this order, then the rest sorted."""

KNOWN_METHODS = frozenset((*METHOD_ORDER, "SUBSCRIBE", "NOTIFY", "PUBLISH", "REFER", "SERVICE"))
"""Methods we know but may not have enabled: 405 with Allow, not 501 (§21.4.6).
SERVICE is Lync's, for media relay credentials ([MS-AVEDGEA])."""

SUPPORTED = ("path", "outbound")

RETRY_AFTER_DRAINING = "30"


PARTNER_HEADER = "Conclave-Partner"
"""Set by a trusted Edge on a federated partner's request: the partner domain it
authenticated. Believed only on an Edge's connection, removed from every request."""


class EdgeLink(Protocol):
    """The way to other organisations: the Edge's internal side."""

    route: str
    """Our Route entry for the Edge (``<sip:edge-internal:port;transport=tls;lr>``)."""

    def flow(self) -> Flow | None:
        """The open connection to the Edge, if there is one."""
        ...

    def connect(self) -> Awaitable[Flow]:
        """Open one (raises on failure)."""
        ...


class EdgeRoutes(Protocol):
    """Remote users' bindings: their Path starts at a trusted Edge, and requests for them
    go to that Edge on any connection with it (dialled when none is open), whichever
    connection (the Edge's, a Director's) their REGISTER came on."""

    def edge_of(self, path: tuple[str, ...]) -> str | None:
        """The trusted Edge a binding's Path starts at, if it does."""
        ...

    def flow(self, edge: str) -> Flow | None: ...

    def connect(self, edge: str) -> Awaitable[Flow]: ...


class MemberRelay(Protocol):
    """The other Front Ends of this pool (docs/pools.md): a request one of them sends
    for a client connected here names that client's connection in its Route."""

    def from_member(self, flow: Flow) -> bool:
        """True for a mutual-TLS connection from another member of the pool."""
        ...

    def device(self, token: str) -> Flow | None:
        """The open client connection ``token`` names (made here), else None."""
        ...


class Reach(Protocol):
    """The transport, as far as routing needs it."""

    def usable(self, flow: Flow) -> Flow | None:
        """``flow`` if it still reaches its peer (for UDP: any socket of ours
        reaches the same address), else None."""
        ...


def _under(host: str, domain: str) -> bool:
    host, domain = host.lower().rstrip("."), domain.lower().rstrip(".")
    return host == domain or host.endswith("." + domain)


def allow_list(owned: set[str] | frozenset[str]) -> list[str]:
    """The methods to list in Allow when features own ``owned``."""
    allowed = {*CORE_METHODS, *owned}
    first = [m for m in METHOD_ORDER if m in allowed]
    return first + sorted(allowed - set(first))


class Router:
    """Dispatches the stack's requests and unmatched responses."""

    def __init__(
        self,
        *,
        host: FeatureHost,
        proxy: Proxy,
        signin: SignIn,
        reach: Reach,
        wall_clock: Callable[[], float] = time.time,
        edges: frozenset[str] = frozenset(),
        federation: EdgeLink | None = None,
        is_edge: Callable[[Flow], bool] | None = None,
        edge_routes: EdgeRoutes | None = None,
        members: MemberRelay | None = None,
    ) -> None:
        self.host = host
        self.members = members
        self.stack = host.stack
        self.local: LocalEndpoint = host.local
        self.users = host.users
        self.location = host.location
        self.registry = host.registry
        self.proxy = proxy
        self.dialogs = proxy.dialogs
        self.signin = signin
        self.reach = reach
        self.clock = wall_clock
        self.federation = federation
        self.is_edge = is_edge
        self.edge_routes = edge_routes
        """True for a connection from a trusted Edge (its server certificate)."""
        """Set when the topology federates: requests for other domains go to the Edge."""
        self.edges = frozenset(name.lower() for name in edges)
        """Internal names of trusted Edges: an in-dialog request may keep a Route to one
        (the Edge's hidden dialog id); it still goes only to the dialog's recorded flow."""
        self.owners = self.registry.owners
        self.allowed = frozenset((*CORE_METHODS, *self.owners))
        self.allow_header = ", ".join(allow_list(frozenset(self.owners)))
        self.supported_header = ", ".join(SUPPORTED)
        self.allow_events = ", ".join(sorted(self.registry.packages))

    # -- requests ------------------------------------------------------------------------
    def on_request(self, txn: ServerTransaction, request: Request) -> None:
        flow = txn.source
        assert isinstance(flow, Flow)
        try:
            self._route(txn, request, flow)
        except RemoteProtocolError as exc:
            self.stack.respond(txn, exc.status, exc.reason, headers=exc.headers)

    def _route(self, txn: ServerTransaction, request: Request, flow: Flow) -> None:
        in_dialog = request.to_tag is not None
        if self.stack.draining and not in_dialog:
            self.stack.respond(
                txn, 503, "Server shutting down", headers=[("Retry-After", RETRY_AFTER_DRAINING)]
            )
            return
        if requires_tls(request.uri) and not flow.secure:
            # RFC 3261 §26.2.2: a SIPS request must travel over TLS on every hop.
            self.stack.respond(txn, 403, "SIPS requires TLS")
            return
        partner = request.headers.get(PARTNER_HEADER)
        if partner is not None:
            request.headers.remove(PARTNER_HEADER)
            if self.is_edge is None or not self.is_edge(flow):
                partner = None
        token = self._pop_own_routes(request, flow)
        if token is not None and not in_dialog and self._from_member(flow):
            self._to_device(txn, request, flow, token)
            return
        if request.headers.get("Route") is not None and not (
            in_dialog and token is not None and self._edge_routes(request)
        ):
            self.stack.respond(txn, 403, "Relaying to other servers is not enabled")
            return
        if request.method not in KNOWN_METHODS:
            self.stack.respond(txn, 501, f"{request.method} is not implemented")
        elif in_dialog and token is not None and request.method not in self.allowed:
            # Relayed along a dialog we record-routed (a partner's NOTIFY to a local
            # watcher): the dialog, not this server's features, decides what it carries.
            self._in_dialog(txn, request, flow, token)
        elif request.method not in self.allowed:
            self._method_not_allowed(txn, request)
        elif in_dialog:
            self._in_dialog(txn, request, flow, token)
        else:
            self._out_of_dialog(txn, request, flow, partner)

    def _pop_own_routes(self, request: Request, flow: Flow) -> str | None:
        """Remove our own Route entries (§16.4); return the first one's dialog id.
        The last one is how the sender reaches us: remembered for its flow."""
        routes = request.routes
        ours = 0
        while ours < len(routes) and self.local.is_me(routes[ours].uri):
            ours += 1
        if ours == 0:
            return None
        self.local.remember_reach(flow, routes[ours - 1].uri)
        # Entries, not header lines: a client may put several in one line.
        request.headers.remove("Route")
        for route in routes[ours:]:
            request.headers.add("Route", str(route))
        first = routes[0].uri
        return first.user if isinstance(first, SipURI) else None

    def _from_member(self, flow: Flow) -> bool:
        return self.members is not None and self.members.from_member(flow)

    def _to_device(self, txn: ServerTransaction, request: Request, flow: Flow, token: str) -> None:
        """Another member of the pool sends a request for a client connected here: it
        authenticated the sender and applied policy; this member only carries it on
        the connection the token names (and records the dialog, so the client's
        in-dialog requests come back through here on that connection)."""
        assert self.members is not None
        device = self.members.device(token)
        if device is None:
            # RFC 5626 §5.3: the client's connection is gone; the member forgets it.
            self.stack.respond(txn, 430, "Flow Failed")
            return
        if request.max_forwards == 0:
            self.stack.respond(txn, 483, "Too Many Hops")
            return
        # Any Route left is the client's own Path: it travels on the client's connection.
        sender = request.from_aor or str(request.from_addr.uri)
        self.proxy.forward(txn, request, [Target(request.uri, device)], inbound=flow, sender=sender)

    def _same_edge(self, recorded: Flow | None, flow: Flow) -> bool:
        if self.is_edge is None or recorded is None:
            return False
        return self.is_edge(flow) and self.is_edge(recorded)

    def _edge_routes(self, request: Request) -> bool:
        """True when the next Route names a trusted Edge (what follows it is the Edge's
        business: a federated partner's own entries)."""
        routes = request.routes
        return (
            bool(self.edges and routes)
            and isinstance(routes[0].uri, SipURI)
            and routes[0].uri.host.lower() in self.edges
        )

    # -- in a dialog ---------------------------------------------------------------------
    def _in_dialog(
        self, txn: ServerTransaction, request: Request, flow: Flow, token: str | None
    ) -> None:
        owner = self.owners.get(request.method)
        if token is None and owner is not None and self.local.is_me(request.uri):
            # A dialog in which this server is a party (a subscription refresh):
            # on the dialog's own flow its party is known; elsewhere it signs in.
            known = self.registry.dialog_checks.get(request.method)
            sender = request.from_aor
            if known is not None and sender is not None and known(request, flow):
                exchange: Exchange | None = Exchange(
                    txn, request, flow, sender, None, stack=self.stack
                )
            else:
                exchange = self._from_local_user(txn, request, flow)
            if exchange is not None:
                self._accepted(exchange)
                owner(exchange)
            return
        if token is None:
            # No Record-Route of ours: this dialog was not set up through us,
            # so we will not carry it (no open relay).
            self.stack.respond(txn, 403, "Not a dialog routed by this server")
            return
        hop = self.dialogs.check(token, request, flow, self.stack.now())
        if isinstance(hop, Refusal):
            log.info("in-dialog request refused", status=hop.status, reason=hop.reason)
            self.stack.respond(txn, hop.status, hop.reason)
            return
        user = None
        if not hop.on_party_flow and self._same_edge(hop.sender.flow, flow):
            # The party is behind a trusted Edge, which may use any of its connections
            # (it dials us, we dial it); the Edge bound the request to the party itself.
            self.dialogs.moved(hop, flow)
        elif not hop.on_party_flow:
            user = self._authenticated_as_party(txn, request, flow, hop)
            if user is None:
                return
        target = self.reach.usable(hop.toward)
        if target is None:
            # RFC 5626 §5.3: the flow the other party used is gone; it must
            # come back and re-establish the dialog, we will not guess a new one.
            self.stack.respond(txn, 430, "Flow Failed")
            return
        self.dialogs.touch(hop.dialog, self.stack.now())
        if request.method == "BYE":
            self.dialogs.end(hop, request)
        exchange = Exchange(txn, request, flow, hop.sender.aor, user, hop=hop, stack=self.stack)
        self._accepted(exchange)
        self._after_gates(exchange, lambda: self._relay(exchange, target))

    def _authenticated_as_party(
        self, txn: ServerTransaction, request: Request, flow: Flow, hop: Hop
    ) -> str | None:
        """An in-dialog request from a flow the dialog does not know: it must
        authenticate as the party its From names. That party is then reached
        on this flow (it reconnected). None once answered."""
        user = self.signin.identify(txn, request, flow, proxy=True)
        if user is None:
            return None
        if self._aor(user) != hop.sender.aor:
            log.warning("not a party of the dialog", user=user, party=hop.sender.aor)
            self.stack.respond(txn, 403, "Not a party of this dialog")
            return None
        self.dialogs.moved(hop, flow)
        return user

    def _relay(self, exchange: Exchange, target: Flow) -> None:
        assert exchange.hop is not None
        self.proxy.forward(
            exchange.txn,
            exchange.request,
            [Target(exchange.request.uri, target)],
            inbound=exchange.flow,
            sender=exchange.sender,
            dialog=exchange.hop.dialog,
        )

    # -- out of a dialog -----------------------------------------------------------------
    def _out_of_dialog(
        self, txn: ServerTransaction, request: Request, flow: Flow, partner: str | None = None
    ) -> None:
        uri = request.uri
        if isinstance(uri, TelURI):
            self.stack.respond(txn, 404, "Telephone numbers need a mediation server")
            return
        assert isinstance(uri, SipURI)
        if request.method == "REGISTER":
            self._register(txn, request, flow)
            return
        if uri.user is None and (self.local.is_my_domain(uri) or self.local.is_my_host(uri)):
            self._to_server(txn, request)
            return
        if request.max_forwards == 0:
            # §16.3 step 3: a request we would forward has no hops left.
            self.stack.respond(txn, 483, "Too Many Hops")
            return
        if self.proxy.is_loop(request):
            self.stack.respond(txn, 482, "Loop Detected")
            return
        if not self.local.is_my_domain(uri):
            if self.federation is None or partner is not None:
                self.stack.respond(txn, 403, "Relaying to other domains is not enabled")
                return
            self._to_partner(txn, request, flow, uri)
            return
        exchange = self._from_local_user(txn, request, flow, partner)
        if exchange is None:
            return
        uri = self._canonical_target(request, uri)
        if uri.user is not None:
            exchange.target = aor_of(uri)
        self._accepted(exchange)
        owner = self.owners.get(request.method)
        if owner is not None:
            owner(exchange)
        elif uri.user is None or not self.users.exists(uri.user):
            self.stack.respond(txn, 404, "No such user")
        else:
            self._after_gates(exchange, lambda: self._deliver(exchange))

    def _to_partner(
        self, txn: ServerTransaction, request: Request, flow: Flow, uri: SipURI
    ) -> None:
        """A local user's request for another organisation: through the Edge, which
        applies the federation policy (allow-list, block-list, presence opt-in)."""
        exchange = self._from_local_user(txn, request, flow)
        if exchange is None:
            return
        if uri.user is not None:
            exchange.target = aor_of(uri)
        self._accepted(exchange)
        self._after_gates(exchange, lambda: self._via_edge(exchange, uri))

    def _via_edge(self, exchange: Exchange, uri: SipURI) -> None:
        link = self.federation
        assert link is not None
        flow = link.flow()
        if flow is not None:
            self._forward_to_edge(exchange, uri, flow)
            return
        self.host.spawn(self._connect_edge(exchange, uri, link))

    async def _connect_edge(self, exchange: Exchange, uri: SipURI, link: EdgeLink) -> None:
        try:
            flow = await link.connect()
        except Exception as exc:  # any failure: the sender gets a prompt 503
            log.warning("edge unreachable", reason=str(exc))
            self.stack.respond(
                exchange.txn, 503, "Edge unreachable", headers=[("Retry-After", "30")]
            )
            return
        self._forward_to_edge(exchange, uri, flow)

    def _forward_to_edge(self, exchange: Exchange, uri: SipURI, flow: Flow) -> None:
        assert self.federation is not None
        target = Target(uri, flow, (self.federation.route,))
        self.proxy.forward(
            exchange.txn, exchange.request, [target], inbound=exchange.flow, sender=exchange.sender
        )

    def _canonical_target(self, request: Request, uri: SipURI) -> SipURI:
        """One identity per user whatever the case it is written in: the stored
        spelling is the AOR that features, quotas and privacy see."""
        if uri.user is None:
            return uri
        canonical = self.users.canonical(uri.user)
        if canonical is None or canonical == uri.user:
            return uri
        request.uri = dataclasses.replace(uri, user=canonical)
        assert isinstance(request.uri, SipURI)
        return request.uri

    def _from_local_user(
        self, txn: ServerTransaction, request: Request, flow: Flow, partner: str | None = None
    ) -> Exchange | None:
        """The request as sent by an authenticated local user, or None once answered.

        Senders outside our domain get 403, unless a trusted Edge vouches for
        them as a federated partner's (``partner``, checked against From);
        local ones are challenged (407) and must authenticate as the From
        user (403).
        """
        sender = request.from_addr.uri
        if not self.local.is_my_domain(sender):
            if partner is not None and isinstance(sender, SipURI) and _under(sender.host, partner):
                return Exchange(txn, request, flow, aor_of(sender), None, stack=self.stack)
            self.stack.respond(txn, 403, "Federation is not enabled")
            return None
        user = self.signin.identify(txn, request, flow, proxy=True)
        if user is None:
            return None
        if not isinstance(sender, SipURI) or sender.user != user:
            log.warning("identity mismatch", user=user, from_user=getattr(sender, "user", None))
            self.stack.respond(txn, 403, "From does not match the authenticated user")
            return None
        return Exchange(txn, request, flow, self._aor(user), user, stack=self.stack)

    def _deliver(self, exchange: Exchange) -> None:
        """Fork to every reachable device of the target (§16.5), or find a feature
        that takes the request over, or answer 480."""
        assert exchange.target is not None
        request = exchange.request
        secure_only = requires_tls(request.uri)
        targets = []
        bound: list[tuple[Target, Binding]] = []
        dialling: list[tuple[Binding, str]] = []
        edges = self.edge_routes
        for binding in self.location.lookup(exchange.target, self.clock()):
            edge = edges.edge_of(binding.path) if edges is not None and binding.path else None
            if edges is not None and edge is not None:
                device = edges.flow(edge)
                if device is None:
                    dialling.append((binding, edge))
                    continue
            else:
                device = None if binding.flow is None else self.reach.usable(binding.flow)
            if device is not None and (device.secure or not secure_only):
                targets.append(Target(binding.uri, device, binding.path))
                bound.append((targets[-1], binding))
        if dialling:
            self.host.spawn(self._deliver_after_dialling(exchange, targets, bound, dialling))
            return
        self._forward_or_unreachable(exchange, targets, bound)

    async def _deliver_after_dialling(
        self,
        exchange: Exchange,
        targets: list[Target],
        bound: list[tuple[Target, Binding]],
        dialling: list[tuple[Binding, str]],
    ) -> None:
        assert self.edge_routes is not None
        for binding, edge in dialling:
            try:
                flow = await self.edge_routes.connect(edge)
            except Exception as exc:  # that device is unreachable now; the others may not be
                log.warning("edge unreachable", edge=edge, reason=str(exc))
                continue
            targets.append(Target(binding.uri, flow, binding.path))
            bound.append((targets[-1], binding))
        self._forward_or_unreachable(exchange, targets, bound)

    def _forward_or_unreachable(
        self, exchange: Exchange, targets: list[Target], bound: list[tuple[Target, Binding]]
    ) -> None:
        request = exchange.request
        if targets:
            self.proxy.forward(
                exchange.txn, request, targets, inbound=exchange.flow, sender=exchange.sender,
                flows_failed=lambda failed, everyone: self._flows_failed(
                    exchange, bound, failed, everyone
                ),
            )  # fmt: skip
            return
        self._unreachable(exchange)

    def _unreachable(self, exchange: Exchange) -> None:
        for takeover in self.registry.takeovers:
            if takeover(exchange):
                return
        self.stack.respond(exchange.txn, 480, "User is offline")

    def _flows_failed(
        self,
        exchange: Exchange,
        bound: list[tuple[Target, Binding]],
        failed: list[Target],
        everyone: bool,
    ) -> bool:
        """Devices whose flow failed at the edge (430) are gone: forget their bindings, and
        when no device was left, treat the target as unreachable (the offline store)."""
        aor = exchange.target
        if aor is None:
            return False
        for target, binding in bound:
            if any(target is f for f in failed) and self.location.remove_binding(aor, binding):
                log.info("binding removed: flow failed", aor=aor, contact=str(binding.uri))
        if not everyone:
            return False
        self._unreachable(exchange)
        return True

    def _register(self, txn: ServerTransaction, request: Request, flow: Flow) -> None:
        uri = request.uri
        owner = self.owners.get("REGISTER")
        if owner is None:
            self._method_not_allowed(txn, request)
            return
        if not (self.local.is_my_domain(uri) or self.local.is_me(uri)):
            self.stack.respond(txn, 404, "Not a domain served here")
            return
        user = self.signin.identify(txn, request, flow, proxy=False)
        if user is None:
            return
        exchange = Exchange(txn, request, flow, self._aor(user), user, stack=self.stack)
        self._accepted(exchange)
        owner(exchange)

    def _to_server(self, txn: ServerTransaction, request: Request) -> None:
        if request.method != "OPTIONS":
            allow = "OPTIONS, REGISTER" if "REGISTER" in self.owners else "OPTIONS"
            self._method_not_allowed(txn, request, allow=allow)
            return
        check_extensions(request, "Require", frozenset(SUPPORTED))
        headers = [
            ("Allow", self.allow_header),
            ("Supported", self.supported_header),
            ("Accept", "application/sdp, text/plain"),
        ]
        if self.allow_events:
            headers.append(("Allow-Events", self.allow_events))
        self.stack.respond(txn, 200, "OK", headers=headers)

    # -- hook points ---------------------------------------------------------------------
    def _accepted(self, exchange: Exchange) -> None:
        for hook in self.registry.accepted:
            hook(exchange)

    def _after_gates(self, exchange: Exchange, proceed: Callable[[], None]) -> None:
        """Run ``proceed`` once every BEFORE_DELIVERY gate let the request through."""
        held = [gate for hook in self.registry.gates if (gate := hook(exchange)) is not None]
        if not held:
            proceed()
            return
        self.host.spawn(self._await_gates(exchange, held, proceed))

    async def _await_gates(
        self,
        exchange: Exchange,
        held: list[Awaitable[Refusal | None]],
        proceed: Callable[[], None],
    ) -> None:
        for gate in held:
            refusal = await gate
            if refusal is not None:
                self.stack.respond(
                    exchange.txn, refusal.status, refusal.reason, headers=refusal.headers
                )
                return
        proceed()

    def _aor(self, user: str) -> str:
        """The address of record of local user ``user`` (its stored spelling)."""
        return str(SipURI(user=user, host=self.local.domain))

    def _method_not_allowed(
        self, txn: ServerTransaction, request: Request, allow: str | None = None
    ) -> None:
        self.stack.respond(
            txn,
            405,
            f"{request.method} is not enabled",
            headers=[("Allow", allow or self.allow_header)],
        )

    # -- CANCEL and ACK ------------------------------------------------------------------
    def on_cancel(
        self, txn: ServerTransaction, request: Request, invite: ServerTransaction | None
    ) -> None:
        if invite is None or invite.source != txn.source:
            # A CANCEL cannot be challenged (§22.1): the flow it arrives on is
            # the only proof that the INVITE's sender sent it. Anyone who saw
            # the INVITE's branch (every device it was forked to) could
            # otherwise end the call from another connection.
            self.stack.respond(txn, 481, "No matching transaction")
            return
        self.stack.respond(txn, 200, "OK")
        if not self.proxy.cancel(invite):
            # Not proxied (answered locally, or still waiting on a gate or a store).
            self.stack.respond(invite, 487, "Request Terminated")

    def on_ack(self, request: Request, flow: Flow) -> None:
        """The ACK of a 2xx: forward it statelessly along the dialog (§16.11).

        An ACK cannot be challenged, so it must come on its sender's recorded
        flow; anything else is dropped."""
        token = self._pop_own_routes(request, flow)
        if token is None or (
            request.headers.get("Route") is not None and not self._edge_routes(request)
        ):
            return
        hop = self.dialogs.check(token, request, flow, self.stack.now())
        if isinstance(hop, Refusal) or not hop.on_party_flow:
            log.info("ACK dropped", reason=getattr(hop, "reason", "not on the party's flow"))
            return
        target = self.reach.usable(hop.toward)
        if target is None:
            return
        mf = request.max_forwards
        remaining = 70 if mf is None else mf
        if remaining == 0:
            return
        request.headers.set("Max-Forwards", str(remaining - 1))
        request.headers.prepend("Via", self.local.via(target, new_branch()))
        self.stack.send_stateless(request, target)

    # -- responses -----------------------------------------------------------------------
    def on_stray_response(self, response: Response, flow: Flow) -> None:
        """A response that matched no transaction. Never sent where its Via
        points: only the proxy's dialog check may forward it; else dropped."""
        if self.proxy.on_stray_response(response, flow):
            return
        metrics.STRAY_RESPONSES_DROPPED.inc()
        self.stack.flood_log("stray response dropped", status=response.status, source=str(flow))

    def on_terminated(self, txn: object) -> None:
        self.proxy.on_terminated(txn)
