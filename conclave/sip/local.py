"""This server's own addresses: Via sent-by, Record-Route URIs, and "is this me?"."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from .flow import Flow
from .uri import URI, SipURI

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}

MAX_REMEMBERED_REACHES = 100_000
"""Flows whose way of reaching us is remembered (a short string each); past
it the oldest are forgotten and get our host instead."""


@dataclass
class LocalEndpoint:
    """What the server calls itself on the wire.

    ``host`` is the advertised name or address (config ``server.host``);
    ``ports`` maps each listening transport to its bound port;
    ``addresses`` are extra literal addresses that also mean "this server"
    (the bound IPs);
    ``names`` the other names it answers for (the SIP domain, ``sip.<domain>``,
    the DNS names on its certificate): a client that verifies the certificate
    by name uses one of those, so a Route naming any of them is ours.
    Record-Route entries carry a dialog id (:mod:`conclave.core.dialogs`):
    in-dialog requests go to the flow the dialog recorded for the other
    party, and nowhere else.
    """

    host: str
    domain: str
    ports: dict[str, int] = field(default_factory=dict)
    addresses: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    _reach: OrderedDict[Flow, tuple[str, str | None]] = field(
        default_factory=OrderedDict, repr=False
    )

    def __post_init__(self) -> None:
        self.names = {n.lower().rstrip(".") for n in self.names} | {self.domain.lower()}

    def _mine(self, host: str) -> bool:
        host = host.strip("[]").lower()
        return host == self.host.strip("[]").lower() or host in self.addresses or host in self.names

    @property
    def wire_host(self) -> str:
        """``host`` as written in a Via or a URI: an IPv6 address in brackets
        (RFC 3261 §25.1 ``IPv6reference``); the configuration stores it bare."""
        host = self.host
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    def sent_by(self, transport: str) -> str:
        return f"{self.wire_host}:{self.ports[transport]}"

    def is_own_via(self, host: str, port: int | None) -> bool:
        """True when a Via's sent-by (``host``, ``port``) is one we write."""
        return self._mine(host) and port in self.ports.values()

    def via(self, flow: Flow, branch: str) -> str:
        """Our Via for a request sent on ``flow``, naming us as that side
        reaches us (:meth:`reach`): a client that matches its connections by
        name answers on the one it has, and verifies the same name."""
        hostport, maddr = self._reach_of(flow)
        extra = f";maddr={maddr}" if maddr else ""
        return f"SIP/2.0/{flow.transport.upper()} {hostport};branch={branch};rport{extra}"

    def remember_reach(self, flow: Flow, route: URI) -> None:
        """The client on ``flow`` reached us through ``route`` (one of ours, its
        outbound proxy): the URIs we give that client say the same, so it can
        verify our certificate by the same name and reach us without a DNS
        entry (its ``maddr``), on the connection it already has."""
        if not isinstance(route, SipURI) or (route.port is None and flow.transport != "udp"):
            return
        port = route.port if route.port is not None else self.ports.get(flow.transport)
        maddr = route.params.get("maddr")
        self._reach[flow] = (f"{route.host}:{port}", maddr or None)
        self._reach.move_to_end(flow)
        while len(self._reach) > MAX_REMEMBERED_REACHES:
            self._reach.popitem(last=False)

    def forget_reach(self, flow: Flow) -> None:
        self._reach.pop(flow, None)

    def _reach_of(self, flow: Flow) -> tuple[str, str | None]:
        remembered = self._reach.get(flow)
        if remembered is not None:
            return remembered
        return self.sent_by(flow.transport), None

    def reach(self, flow: Flow) -> str:
        """``host:port;transport=…[;maddr=…]``: us as the client on ``flow``
        reaches us (what it used, :meth:`remember_reach`, else our host)."""
        hostport, maddr = self._reach_of(flow)
        extra = f";maddr={maddr}" if maddr else ""
        return f"{hostport};transport={flow.transport}{extra}"

    def record_route(self, flow: Flow, token: str) -> str:
        """Our Record-Route URI as seen from ``flow``'s side, carrying the id of
        the dialog it belongs to (:mod:`conclave.core.dialogs`), which is what
        binds in-dialog requests to the dialog's parties and flows. It names
        us as that side reaches us (RFC 5658: each side gets the entry it can
        use; :meth:`reach`)."""
        return f"<sip:{token}@{self.reach(flow)};lr>"

    def is_me(self, uri: URI) -> bool:
        """True when ``uri`` addresses this server (a Route or Request-URI host)."""
        if not isinstance(uri, SipURI):
            return False
        if not self._mine(uri.host):
            return False
        port = uri.port
        if port is None:
            port = 5061 if uri.scheme == "sips" or uri.transport == "tls" else 5060
        return port in self.ports.values()

    def is_my_host(self, uri: URI) -> bool:
        """True when ``uri``'s host names this server, whatever the port."""
        if not isinstance(uri, SipURI):
            return False
        return self._mine(uri.host)

    def is_my_domain(self, uri: URI) -> bool:
        return isinstance(uri, SipURI) and uri.host.lower() == self.domain
