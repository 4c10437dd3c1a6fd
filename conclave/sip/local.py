"""This server's own addresses: Via sent-by, Record-Route URIs, and "is this me?"."""

from __future__ import annotations

from dataclasses import dataclass, field

from .flow import Flow
from .uri import URI, SipURI

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


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

    def own_sent_by(self) -> set[str]:
        """Every ``host:port`` our Via headers carry."""
        return {f"{self.wire_host}:{port}".lower() for port in self.ports.values()}

    def via(self, transport: str, branch: str) -> str:
        return f"SIP/2.0/{transport.upper()} {self.sent_by(transport)};branch={branch};rport"

    def record_route(self, flow: Flow, token: str) -> str:
        """Our Record-Route URI as seen from ``flow``'s side, carrying the id of
        the dialog it belongs to (:mod:`conclave.core.dialogs`), which is what
        binds in-dialog requests to the dialog's parties and flows."""
        t = flow.transport
        return f"<sip:{token}@{self.sent_by(t)};transport={t};lr>"

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
