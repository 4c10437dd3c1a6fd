"""The Access Edge: relays remote users' SIP between the internet and the pool.

The Edge authenticates nobody. It stands between two sides and keeps them
apart (docs/edge.md):

* **outside**: remote users' TLS connections on the external listener. A
  request from outside goes only to the Edge's one inside next hop (the
  Director, or the Front End pool), over mutual TLS, whatever its Route or
  Request-URI says; a Route naming anyone but the Edge is refused (403, no
  open relay), so is a request for a domain that is not the organisation's
  (federation is a separate listener). The Front End challenges it; the
  client's Via, stamped with ``received``/``rport`` here, tells the Front End
  which address to count failures against, and a ``Conclave-Source-Ban``
  header on a response tells the Edge to ban that address at the perimeter;
* **inside**: the next hop's connections. A request from inside must carry a
  Route the Edge gave out: a flow token (``Path`` of a remote user's REGISTER)
  or a hidden dialog's id (:mod:`.state`). Anything else is 403; a token
  whose connection is gone is 430.

**Topology hiding.** Nothing leaves through the outside that names an
internal host: requests and responses going out carry only the Edge's own
Via (the inside ones are kept with the transaction and restored on the way
back), a dialog's Record-Route and Contact become ``sip:ID@edge-external``
(the real ones are kept with the hidden dialog), and Path, Service-Route,
Warning and Server headers are removed.

Requests are relayed statefully, one branch each: responses come back
through the client transaction, CANCEL follows its INVITE, ACKs for 2xx
travel along the hidden dialog.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import structlog

from conclave.core.stack import SipStack
from conclave.sip.errors import LocalProtocolError, RemoteProtocolError
from conclave.sip.flow import Flow
from conclave.sip.headers import Headers
from conclave.sip.ids import new_branch
from conclave.sip.message import Request, Response
from conclave.sip.transaction import ClientTransaction, ServerTransaction, make_cancel
from conclave.sip.uri import SipURI, parse_uri

from .federation import FederationPolicy, covers
from .state import FlowTokens, HiddenDialog, HiddenDialogs

log = structlog.get_logger("conclave.edge")

DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
"""Requests that can create a dialog (RFC 3261 §12, RFC 6665, RFC 3515)."""
PRESENCE_METHODS = frozenset({"SUBSCRIBE", "PUBLISH"})
"""What presence federation, off unless a partner opts in, consists of."""
HIDDEN_HEADERS = ("Path", "Service-Route", "Warning", "Server", "P-Conclave-Trace")
"""Headers that can name internal hosts and never leave through the outside."""
BAN_HEADER = "Conclave-Source-Ban"
"""On a response from inside: the Front End banned the client this request came
from, for the given seconds; the Edge applies the ban and removes the header."""
MAX_BAN_SECONDS = 86_400
"""A ban from inside longer than this is cut to it (the Front End's own cap)."""
DEFAULT_MAX_FORWARDS = 70
RETRY_AFTER_UNREACHABLE = "30"
PARTNER_HEADER = "Conclave-Partner"
"""On a request relayed inward: the federated partner domain the Edge authenticated
(by its certificate) and checked the From against. Removed from anything that
arrives from outside, trusted by Front Ends only on an Edge's connection."""
Side = Literal["access", "federation", "inside"]
_TOKEN_RE = re.compile(r"^[0-9a-f]{1,16}-[0-9a-f]{20}$")
_DIALOG_RE = re.compile(r"^[0-9a-f]{32}$")


class Links(Protocol):
    """What the relay needs of the Edge process's transport."""

    def side(self, flow: Flow) -> Side:
        """``access`` (a remote user), ``federation`` (a partner) or ``inside``."""
        ...

    def partner_of(self, flow: Flow, claimed: str | None = None) -> str | None:
        """The partner domain a federation connection is authenticated as: a listed
        partner by its certificate; with discovery, ``claimed`` when the certificate
        names a host in that domain."""
        ...

    def to_partner(self, domain: str) -> Awaitable[Flow]:
        """A mutual-TLS connection to ``domain``'s edge (raises on failure)."""
        ...

    def usable(self, flow: Flow) -> bool:
        """True while ``flow`` is open."""
        ...

    def inward(self) -> Awaitable[Flow]:
        """A mutual-TLS connection to the next hop inside (raises on failure)."""
        ...

    def ban(self, ip: str, seconds: float) -> None:
        """Refuse ``ip`` at the perimeter for ``seconds``."""
        ...


@dataclass(frozen=True)
class EdgeNames:
    """How the Edge names itself on each side, and the domains it serves."""

    external_host: str
    external_port: int
    internal_host: str
    internal_port: int
    domains: frozenset[str]
    federation_port: int = 5061
    external_aliases: frozenset[str] = frozenset()
    """Other names and addresses that mean the external side (its IP)."""
    internal_aliases: frozenset[str] = frozenset()

    def outside_uri(self, user: str, reach: str | None = None) -> str:
        """Us as the outside sees us: as the party reaches us (``reach``), else by name."""
        hostport = reach or f"{self.external_host}:{self.external_port}"
        return f"sip:{user}@{hostport};transport=tls"

    def inside_uri(self, user: str) -> str:
        return f"sip:{user}@{self.internal_host}:{self.internal_port};transport=tls"

    def is_outside_me(self, uri: object) -> bool:
        return isinstance(uri, SipURI) and _host(uri) in (
            {self.external_host.lower()} | self.external_aliases
        )

    def is_inside_me(self, uri: object) -> bool:
        return isinstance(uri, SipURI) and _host(uri) in (
            {self.internal_host.lower()} | self.internal_aliases
        )


def _host(uri: SipURI) -> str:
    return uri.host.strip("[]").lower()


@dataclass(eq=False)
class Relayed:
    """One request relayed across the Edge: the owner of its client transaction."""

    relay: EdgeRelay
    server_txn: ServerTransaction
    request: Request
    """The request as it arrived (its Vias go back on every response)."""
    outward: bool
    """True when it goes from inside to outside."""
    client_ip: str = ""
    partner: str | None = None
    """The federated partner on the outside end of this request."""
    dialog: HiddenDialog | None = None
    opens: bool = False
    """True when this request creates ``dialog``."""
    out: Request | None = None
    flow: Flow | None = None
    txn: ClientTransaction | None = None
    provisional: bool = False
    final: bool = False
    cancel_wanted: bool = False
    cancelled: bool = False
    outside_record_route: tuple[str, ...] = field(default=())

    def on_response(self, txn: ClientTransaction, response: Response) -> None:
        self.relay.response(self, response)

    def on_failure(self, txn: ClientTransaction, status: int) -> None:
        reason = "Request Timeout" if status == 408 else "Next hop unreachable"
        self.relay.answer(self, status, reason)


class EdgeRelay:
    """The transaction user of an Edge process (see the module docstring)."""

    def __init__(
        self,
        stack: SipStack,
        names: EdgeNames,
        links: Links,
        *,
        spawn: Callable[[Awaitable[None]], object],
        tokens: FlowTokens | None = None,
        federation: FederationPolicy | None = None,
    ) -> None:
        self.stack = stack
        self.names = names
        self.links = links
        self.spawn = spawn
        self.tokens = tokens or FlowTokens()
        self.federation = federation or FederationPolicy(enabled=False)
        self.dialogs = HiddenDialogs()
        self._reach: dict[int, str] = {}
        """Per outside connection: the Edge's host:port as that client addressed it."""
        self._inside: Flow | None = None
        self._relayed: dict[ServerTransaction, Relayed] = {}
        self.counters = {"inward": 0, "outward": 0, "refused": 0}

    @property
    def inside(self) -> Flow | None:
        """The connection to the next hop inside, once made."""
        return self._inside

    def pending(self) -> int:
        return sum(1 for r in self._relayed.values() if not r.final)

    # -- requests ------------------------------------------------------------------------
    def on_request(self, txn: ServerTransaction, request: Request) -> None:
        flow = txn.source
        assert isinstance(flow, Flow)
        try:
            side = self.links.side(flow)
            if side == "access":
                self._from_outside(txn, request, flow)
            elif side == "federation":
                self._from_partner(txn, request, flow)
            else:
                self._from_inside(txn, request, flow)
        except RemoteProtocolError as exc:
            self._refuse(txn, exc.status, exc.reason)

    def _refuse(self, txn: ServerTransaction, status: int, reason: str) -> None:
        self.counters["refused"] += 1
        self.stack.flood_log("edge refused", status=status, reason=reason)
        self.stack.respond(txn, status, reason)

    def _own_routes(
        self, request: Request, mine: Callable[[object], bool], *, rest: bool = False
    ) -> list[SipURI]:
        """Our leading Route entries; every Route is removed from ``request``. Others
        after ours are 403, unless ``rest`` (a partner's own entries in a dialog with it,
        which the Edge replaces with the ones it recorded: it never routes by them)."""
        routes = request.routes
        ours = 0
        while ours < len(routes) and mine(routes[ours].uri):
            ours += 1
        if ours < len(routes) and not (rest and ours):
            raise RemoteProtocolError("Relaying through this edge is not allowed", 403)
        request.headers.remove("Route")
        return [r.uri for r in routes[:ours] if isinstance(r.uri, SipURI)]

    def _from_outside(self, txn: ServerTransaction, request: Request, flow: Flow) -> None:
        if request.max_forwards == 0:
            raise RemoteProtocolError("Too Many Hops", 483)
        own = self._own_routes(request, self.names.is_outside_me)
        if own and own[-1].port is not None:  # how this client reaches us (its outbound proxy)
            self._reach[flow.conn_id] = f"{own[-1].host}:{own[-1].port}"
        client_ip = flow.remote[0]
        if request.to_tag is not None:
            self._outside_in_dialog(txn, request, flow, own, client_ip)
            return
        uri = request.uri
        if not isinstance(uri, SipURI):
            raise RemoteProtocolError("Telephone numbers need a mediation server", 404)
        if uri.user is None and self.names.is_outside_me(uri):
            if request.method != "OPTIONS":
                raise RemoteProtocolError(f"{request.method} is not served by the edge", 405)
            self.stack.respond(txn, 200, "OK", headers=[("Allow", "OPTIONS")])
            return
        if _host(uri) not in self.names.domains:
            raise RemoteProtocolError("Federation is not enabled on this edge", 403)
        sender = request.from_addr.uri
        if not isinstance(sender, SipURI) or _host(sender) not in self.names.domains:
            raise RemoteProtocolError("Federation is not enabled on this edge", 403)
        relayed = Relayed(self, txn, request, outward=False, client_ip=client_ip)
        headers = self._inward_headers(request)
        if request.method in DIALOG_METHODS:
            call_id = request.call_id or ""
            relayed.dialog = self.dialogs.open(flow, call_id, self.stack.now())
            relayed.dialog.reach = self._reach.get(flow.conn_id)
            relayed.opens = True
            headers.prepend("Record-Route", f"<{self.names.inside_uri(relayed.dialog.id)};lr>")
        if request.method == "REGISTER":
            # RFC 3327: requests for this binding come back through us, naming this connection.
            headers.prepend("Path", f"<{self.names.inside_uri(self.tokens.token(flow))};lr;ob>")
        else:
            self.tokens.token(flow)
        self._send_inward(relayed, headers)

    def _from_partner(self, txn: ServerTransaction, request: Request, flow: Flow) -> None:
        """A request from a federated partner's connection (mutual TLS, its certificate
        checked against its own CAs): its From must be in its domain, its rate within
        its limit, its target one of our users."""
        sender = request.from_addr.uri
        claimed = _host(sender) if isinstance(sender, SipURI) else None
        partner = self.links.partner_of(flow, claimed)
        if partner is None or not self.federation.allowed(partner):
            raise RemoteProtocolError("Not a federated partner", 403)
        if not isinstance(sender, SipURI) or not covers(partner, _host(sender)):
            log.warning("partner spoke for another domain", partner=partner)
            raise RemoteProtocolError("From is not in the partner's domain", 403)
        now = self.stack.now()
        if not self.federation.admit(partner, now):
            refused = self.federation.throttle_report(partner, now)
            if refused is not None:
                log.warning("partner throttled", partner=partner, refused=refused)
            self.stack.respond(
                txn, 503, "Partner request rate exceeded", headers=[("Retry-After", "1")]
            )
            return
        if request.max_forwards == 0:
            raise RemoteProtocolError("Too Many Hops", 483)
        own = self._own_routes(request, self.names.is_outside_me)
        if request.to_tag is not None:
            self._outside_in_dialog(txn, request, flow, own, "")
            return
        uri = request.uri
        if not isinstance(uri, SipURI) or _host(uri) not in self.names.domains:
            raise RemoteProtocolError("Not a domain of this organisation", 403)
        if request.method == "REGISTER":
            raise RemoteProtocolError("Partners do not register here", 403)
        if request.method in PRESENCE_METHODS and not self.federation.partner(partner).presence:
            raise RemoteProtocolError("Presence federation is not enabled for this partner", 403)
        self._check_contacts(partner, f"sip:{uri.user}@{_host(uri)}")
        relayed = Relayed(self, txn, request, outward=False, partner=partner)
        headers = self._inward_headers(request)
        headers.add(PARTNER_HEADER, partner)
        if request.method in DIALOG_METHODS:
            dialog = self.dialogs.open(flow, request.call_id or "", now, partner=partner)
            relayed.dialog, relayed.opens = dialog, True
            # The partner's own (hidden) entries: our route back to it, in order (UAS side).
            dialog.outside_record_route = tuple(request.headers.get_all("Record-Route"))
            dialog.outward_route = dialog.outside_record_route
            headers.prepend("Record-Route", f"<{self.names.inside_uri(dialog.id)};lr>")
        self._send_inward(relayed, headers)

    def _outside_in_dialog(
        self,
        txn: ServerTransaction,
        request: Request,
        flow: Flow,
        own: list[SipURI],
        client_ip: str,
    ) -> None:
        dialog = self._dialog_of(own, request)
        if dialog.partner is not None:
            if self.links.partner_of(flow, dialog.partner) != dialog.partner:
                raise RemoteProtocolError("Not a party of this dialog", 403)
        elif dialog.outside != flow:
            raise RemoteProtocolError("Not on the dialog's connection", 403)
        uri = request.uri
        if (
            isinstance(uri, SipURI)
            and self.names.is_outside_me(uri)
            and uri.user == dialog.id
            and dialog.inside_contact is not None
        ):
            request.uri = _uri(dialog.inside_contact)
        relayed = Relayed(self, txn, request, outward=False, client_ip=client_ip, dialog=dialog)
        headers = self._inward_headers(request)
        if dialog.partner is not None:
            relayed.partner = dialog.partner
            headers.add(PARTNER_HEADER, dialog.partner)
        for hop in reversed(dialog.inward_route):
            headers.prepend("Route", hop)
        if request.method == "BYE":
            dialog.ending = True
        self._send_inward(relayed, headers)

    def _dialog_of(self, own: list[SipURI], request: Request) -> HiddenDialog:
        token = own[0].user if own else None
        if token is None or not _DIALOG_RE.match(token):
            raise RemoteProtocolError("Not a dialog routed by this edge", 403)
        dialog = self.dialogs.get(token, self.stack.now())
        if dialog is None:
            raise RemoteProtocolError("Call/Transaction Does Not Exist", 481)
        if request.call_id != dialog.call_id:
            raise RemoteProtocolError("Not a dialog routed by this edge", 403)
        return dialog

    def _inward_headers(self, request: Request) -> Headers:
        headers = request.headers.copy()
        max_forwards = request.max_forwards
        remaining = DEFAULT_MAX_FORWARDS if max_forwards is None else max_forwards
        headers.set("Max-Forwards", str(max(remaining - 1, 0)))
        headers.remove(BAN_HEADER)
        headers.remove(PARTNER_HEADER)  # only the Edge says who a partner is
        return headers

    def _from_inside(self, txn: ServerTransaction, request: Request, flow: Flow) -> None:
        extra = len(request.routes)
        own = self._own_routes(request, self.names.is_inside_me, rest=True)
        extra -= len(own)
        token = own[0].user if own else None
        if extra and not (token is not None and _DIALOG_RE.match(token)):
            raise RemoteProtocolError("Relaying through this edge is not allowed", 403)
        if token is None:
            if own and request.to_tag is None:
                self._to_partner(txn, request)
                return
            raise RemoteProtocolError("Not routed through this edge", 403)
        if _DIALOG_RE.match(token):
            dialog = self.dialogs.get(token, self.stack.now())
            if dialog is None or request.call_id != dialog.call_id:
                raise RemoteProtocolError("Call/Transaction Does Not Exist", 481)
            usable = dialog.outside is not None and self.links.usable(dialog.outside)
            if not usable and dialog.partner is None:
                raise RemoteProtocolError("Flow Failed", 430)
            relayed = Relayed(
                self, txn, request, outward=True, dialog=dialog, partner=dialog.partner
            )
            if extra and dialog.partner is None:
                raise RemoteProtocolError("Relaying through this edge is not allowed", 403)
            headers = self._outward_headers(request)
            headers.remove("Record-Route")
            for hop in reversed(dialog.outward_route):
                headers.prepend("Route", hop)
            if request.headers.get("Contact") is not None:  # a target refresh
                dialog.inside_contact = _first_contact(request)
                headers.set("Contact", f"<{self.names.outside_uri(dialog.id, dialog.reach)}>")
            if request.method == "BYE":
                dialog.ending = True
            if usable and dialog.outside is not None:
                self._send(relayed, dialog.outside, headers)
            else:  # the partner's connection closed: dial it again
                self._relayed[relayed.server_txn] = relayed
                self.spawn(self._connect_then_send(relayed, headers))
            return
        target = self.tokens.flow(token) if _TOKEN_RE.match(token) else None
        if target is None or not self.links.usable(target):
            if target is None and not _TOKEN_RE.match(token):
                raise RemoteProtocolError("Not routed through this edge", 403)
            raise RemoteProtocolError("Flow Failed", 430)
        relayed = Relayed(self, txn, request, outward=True)
        headers = self._outward_headers(request)
        if request.method in DIALOG_METHODS and request.to_tag is None:
            dialog = self.dialogs.open(target, request.call_id or "", self.stack.now())
            dialog.reach = self._reach.get(target.conn_id)
            relayed.dialog, relayed.opens = dialog, True
            self._hide_new_dialog(dialog, request, headers)
        else:
            headers.remove("Record-Route")
            headers.remove("Contact")
        self._send(relayed, target, headers)

    def _to_partner(self, txn: ServerTransaction, request: Request) -> None:
        """A request from inside for another organisation: to its edge, if we federate."""
        uri = request.uri
        if not isinstance(uri, SipURI):
            raise RemoteProtocolError("Not a SIP address", 416)
        domain = _host(uri)
        if domain in self.names.domains:
            raise RemoteProtocolError("Not routed through this edge", 403)
        if not self.federation.allowed(domain):
            log.info("federation refused", domain=domain)
            raise RemoteProtocolError(f"Federation with {domain} is not allowed", 403)
        if request.method in PRESENCE_METHODS and not self.federation.partner(domain).presence:
            raise RemoteProtocolError("Presence federation is not enabled for this partner", 403)
        self._check_contacts(domain, request.from_aor or "")
        relayed = Relayed(self, txn, request, outward=True, partner=domain)
        headers = self._outward_headers(request)
        if request.method in DIALOG_METHODS:
            dialog = self.dialogs.open(None, request.call_id or "", self.stack.now(), domain)
            relayed.dialog, relayed.opens = dialog, True
            self._hide_new_dialog(dialog, request, headers)
        else:
            headers.remove("Record-Route")
            headers.remove("Contact")
        self._relayed[txn] = relayed
        self.spawn(self._connect_then_send(relayed, headers))

    def _check_contacts(self, partner: str, local: str) -> None:
        """A discovered partner reaches at most MAX_DISCOVERED_CONTACTS local users."""
        if not self.federation.note_contact(partner, local):
            log.warning("partner throttled", partner=partner, reason="distinct local contacts")
            raise RemoteProtocolError("Discovered partner contact limit reached", 403)

    def _hide_new_dialog(self, dialog: HiddenDialog, request: Request, headers: Headers) -> None:
        """A dialog an internal party starts: outside sees the Edge, the real route is kept."""
        dialog.inside_record_route = tuple(request.headers.get_all("Record-Route"))
        dialog.inward_route = dialog.inside_record_route
        dialog.inside_contact = _first_contact(request)
        headers.set("Record-Route", f"<{self.names.outside_uri(dialog.id, dialog.reach)};lr>")
        if dialog.inside_contact is not None:
            headers.set("Contact", f"<{self.names.outside_uri(dialog.id, dialog.reach)}>")

    def _outward_headers(self, request: Request) -> Headers:
        headers = request.headers.copy()
        max_forwards = request.max_forwards
        remaining = DEFAULT_MAX_FORWARDS if max_forwards is None else max_forwards
        if remaining == 0:
            raise RemoteProtocolError("Too Many Hops", 483)
        headers.set("Max-Forwards", str(remaining - 1))
        headers.remove("Via")  # kept with the server transaction, restored on responses
        for name in HIDDEN_HEADERS:
            headers.remove(name)
        headers.remove(PARTNER_HEADER)
        return headers

    # -- sending -------------------------------------------------------------------------
    def _send_inward(self, relayed: Relayed, headers: Headers) -> None:
        inside = self._inside
        if inside is not None and self.links.usable(inside):
            self._send(relayed, inside, headers)
            return
        self._relayed[relayed.server_txn] = relayed
        self.spawn(self._connect_then_send(relayed, headers))

    async def _connect_then_send(self, relayed: Relayed, headers: Headers) -> None:
        partner = relayed.partner if relayed.outward else None
        try:
            if partner is not None:
                flow = await self.links.to_partner(partner)
            else:
                flow = await self.links.inward()
        except Exception as exc:  # any failure to reach the other side is a 503 to the sender
            where = f"partner {partner}" if partner else "next hop"
            log.warning(f"{where} unreachable", reason=str(exc))
            self.answer(
                relayed, 503, f"{where.capitalize()} unreachable",
                [("Retry-After", RETRY_AFTER_UNREACHABLE)],
            )  # fmt: skip
            return
        if partner is None:
            self._inside = flow
        elif relayed.dialog is not None:
            relayed.dialog.outside = flow
        if relayed.final or relayed.cancelled:
            return
        self._send(relayed, flow, headers)

    def _send(self, relayed: Relayed, flow: Flow, headers: Headers) -> None:
        names = self.names
        if not relayed.outward:
            side_host, side_port = names.internal_host, names.internal_port
        elif relayed.partner is not None:
            side_host, side_port = names.external_host, names.federation_port
        else:
            side_host, side_port = names.external_host, names.external_port
        headers.prepend("Via", f"SIP/2.0/TLS {side_host}:{side_port};branch={new_branch()};rport")
        request = relayed.request
        out = Request(request.method, request.uri, headers, request.body, request.version)
        relayed.out, relayed.flow = out, flow
        self._relayed[relayed.server_txn] = relayed
        self.counters["outward" if relayed.outward else "inward"] += 1
        try:
            relayed.txn = self.stack.send_request(out, flow, relayed)
        except LocalProtocolError as exc:
            log.warning("relay not started", reason=str(exc))
            self.answer(relayed, 503, "Service Unavailable")

    # -- responses -----------------------------------------------------------------------
    def response(self, relayed: Relayed, response: Response) -> None:
        status = response.status
        if status == 100:
            return
        headers = response.headers.copy()
        headers.remove("Via")
        for via in relayed.request.headers.get_all("Via"):
            headers.add("Via", via)
        if relayed.outward:
            self._inward_response(relayed, response, headers)
        else:
            self._outward_response(relayed, response, headers)
        out = Response(status, response.reason, headers, response.body, response.version)
        if status < 200:
            if not relayed.provisional:
                relayed.provisional = True
                if relayed.cancel_wanted:
                    self._send_cancel(relayed)
            self.stack.send_response(relayed.server_txn, out)
            return
        self._settle_dialog(relayed, status)
        if relayed.final:
            # A retransmitted or forked 2xx to an INVITE (RFC 6026): pass it on.
            extra_2xx = 200 <= status < 300 and relayed.request.method == "INVITE"
            if extra_2xx and not self.stack.send_response(relayed.server_txn, out):
                source = relayed.server_txn.source
                if isinstance(source, Flow):
                    self.stack.send_stateless(out, source)
            return
        relayed.final = True
        self.stack.send_response(relayed.server_txn, out)

    def _inward_response(self, relayed: Relayed, response: Response, headers: Headers) -> None:
        """A response from outside going in: our hidden Record-Route becomes the real one."""
        dialog = relayed.dialog
        if dialog is not None and relayed.opens and response.headers.get("Record-Route"):
            mine = self.names.outside_uri(dialog.id, dialog.reach)
            above = []
            for entry in response.headers.get_all("Record-Route"):
                if mine in entry:
                    break
                above.append(entry)
            if response.status < 300:  # a partner's entries: our route to it (UAC side)
                dialog.outward_route = tuple(reversed(above))
            headers.remove("Record-Route")
            headers.add("Record-Route", f"<{self.names.inside_uri(dialog.id)};lr>")
            for entry in dialog.inside_record_route:
                headers.add("Record-Route", entry)

    def _outward_response(self, relayed: Relayed, response: Response, headers: Headers) -> None:
        """A response from inside going out: apply a ban, hide the inside."""
        ban = headers.get(BAN_HEADER)
        headers.remove(BAN_HEADER)
        if ban is not None and relayed.client_ip:
            try:
                seconds = min(max(float(ban), 0.0), MAX_BAN_SECONDS)
            except ValueError:
                seconds = 0.0
            if seconds > 0:
                self.links.ban(relayed.client_ip, seconds)
        for name in HIDDEN_HEADERS:
            headers.remove(name)
        dialog = relayed.dialog
        if dialog is None:
            if relayed.request.method != "REGISTER":
                headers.remove("Contact")
            headers.remove("Record-Route")
            return
        if relayed.opens:
            entries = response.headers.get_all("Record-Route")
            mine = self.names.inside_uri(dialog.id)
            above = []
            for entry in entries:
                if mine in entry:
                    break
                above.append(entry)
            if entries:
                dialog.inward_route = tuple(reversed(above))
                headers.remove("Record-Route")
                headers.add(
                    "Record-Route", f"<{self.names.outside_uri(dialog.id, dialog.reach)};lr>"
                )
                for entry in dialog.outside_record_route:  # the outside party's, as it sent them
                    headers.add("Record-Route", entry)
        else:
            headers.remove("Record-Route")
        if response.headers.get("Contact") is not None and response.status < 300:
            dialog.inside_contact = _first_contact(response)
            headers.set("Contact", f"<{self.names.outside_uri(dialog.id, dialog.reach)}>")

    def _settle_dialog(self, relayed: Relayed, status: int) -> None:
        dialog = relayed.dialog
        if dialog is None:
            return
        if relayed.opens and status >= 300 and not dialog.established:
            self.dialogs.end(dialog)
        elif relayed.opens and status < 300:
            dialog.established = True
        elif dialog.ending and relayed.request.method == "BYE":
            self.dialogs.end(dialog)

    def answer(
        self,
        relayed: Relayed,
        status: int,
        reason: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """Answer the request ourselves (the next hop failed), once."""
        if relayed.final:
            return
        relayed.final = True
        self._settle_dialog(relayed, status)
        self.stack.respond(relayed.server_txn, status, reason, headers=headers or [])

    # -- ACK, CANCEL and the rest --------------------------------------------------------
    def on_cancel(
        self, txn: ServerTransaction, request: Request, invite: ServerTransaction | None
    ) -> None:
        if invite is None or invite.source != txn.source:
            self.stack.respond(txn, 481, "No matching transaction")
            return
        self.stack.respond(txn, 200, "OK")
        relayed = self._relayed.get(invite)
        if relayed is None or relayed.final:
            return
        if relayed.txn is None:  # still connecting inward
            relayed.cancelled = True
            self.answer(relayed, 487, "Request Terminated")
        elif relayed.provisional:
            self._send_cancel(relayed)
        else:
            relayed.cancel_wanted = True

    def _send_cancel(self, relayed: Relayed) -> None:
        if relayed.cancelled or relayed.out is None or relayed.flow is None:
            return
        relayed.cancelled = True
        try:
            self.stack.send_request(make_cancel(relayed.out), relayed.flow)
        except LocalProtocolError as exc:
            log.warning("CANCEL not sent", reason=str(exc))

    def on_ack(self, request: Request, flow: Flow) -> None:
        """The ACK of a 2xx, along the hidden dialog; anything else is dropped."""
        try:
            side = self.links.side(flow)
            if side != "inside":
                own = self._own_routes(request, self.names.is_outside_me)
                dialog = self._dialog_of(own, request)
                if dialog.partner is not None:
                    if self.links.partner_of(flow, dialog.partner) != dialog.partner:
                        return
                elif dialog.outside != flow:
                    return
                uri = request.uri
                if isinstance(uri, SipURI) and uri.user == dialog.id and dialog.inside_contact:
                    request.uri = _uri(dialog.inside_contact)
                inside = self._inside
                if inside is None or not self.links.usable(inside):
                    return
                headers = self._inward_headers(request)
                for hop in reversed(dialog.inward_route):
                    headers.prepend("Route", hop)
                via = f"SIP/2.0/TLS {self.names.internal_host}:{self.names.internal_port}"
                headers.prepend("Via", f"{via};branch={new_branch()};rport")
                self.stack.send_stateless(
                    Request("ACK", request.uri, headers, request.body), inside
                )
            else:
                own = self._own_routes(request, self.names.is_inside_me, rest=True)
                token = own[0].user if own else None
                hidden = self.dialogs.get(token or "", self.stack.now())
                if hidden is None or hidden.outside is None:
                    return
                if not self.links.usable(hidden.outside):
                    return
                headers = self._outward_headers(request)
                for hop in reversed(hidden.outward_route):
                    headers.prepend("Route", hop)
                port = self.names.external_port
                if hidden.partner is not None:
                    port = self.names.federation_port
                via = f"SIP/2.0/TLS {self.names.external_host}:{port}"
                headers.prepend("Via", f"{via};branch={new_branch()};rport")
                self.stack.send_stateless(
                    Request("ACK", request.uri, headers, request.body), hidden.outside
                )
        except RemoteProtocolError as exc:
            log.debug("ACK dropped", reason=exc.reason)

    def on_stray_response(self, response: Response, flow: Flow) -> None:
        self.stack.flood_log("stray response dropped", status=response.status, source=str(flow))

    def on_terminated(self, txn: object) -> None:
        if isinstance(txn, ServerTransaction):
            relayed = self._relayed.pop(txn, None)
            if relayed is not None and not relayed.final and relayed.provisional:
                self._send_cancel(relayed)  # the caller is gone: nothing should ring on

    def flow_closed(self, flow: Flow) -> None:
        """A connection closed: its token names nothing, its dialogs end."""
        if flow == self._inside:
            self._inside = None
        self.tokens.forget(flow)
        self._reach.pop(flow.conn_id, None)
        self.dialogs.flow_closed(flow)


def _first_contact(message: Request | Response) -> str | None:
    contacts = message.contacts
    if not contacts or contacts[0] is None:
        return None
    return str(contacts[0].uri)


def _uri(text: str) -> SipURI:
    uri = parse_uri(text)
    if not isinstance(uri, SipURI):
        raise RemoteProtocolError("Not a dialog routed by this edge", 403)
    return uri
