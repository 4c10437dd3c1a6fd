"""This server's own addresses: Via sent-by, Record-Route URIs, and "is this me?"."""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field

from conclave.sip.uri import URI, SipURI
from conclave.transport.flow import Flow

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


@dataclass
class LocalEndpoint:
    """What the server calls itself on the wire.

    ``host`` is the advertised name or address (config ``server.host``);
    ``ports`` maps each listening transport to its bound port;
    ``addresses`` are extra literal addresses that also mean "this server"
    (the bound IPs). Record-Route entries carry an HMAC-protected flow
    token (RFC 5626 §5.3 style) so in-dialog requests return on the very
    connection the other party used, and cannot be steered elsewhere.
    """

    host: str
    domain: str
    ports: dict[str, int] = field(default_factory=dict)
    addresses: set[str] = field(default_factory=set)
    secret: bytes = field(default_factory=lambda: os.urandom(32))

    def sent_by(self, transport: str) -> str:
        return f"{self.host}:{self.ports[transport]}"

    def own_sent_by(self) -> set[str]:
        """Every ``host:port`` our Via headers carry."""
        return {f"{self.host}:{port}".lower() for port in self.ports.values()}

    def via(self, transport: str, branch: str) -> str:
        return f"SIP/2.0/{transport.upper()} {self.sent_by(transport)};branch={branch};rport"

    def record_route(self, flow: Flow, toward: Flow) -> str:
        """Our Record-Route URI as seen from ``flow``'s side.

        ``toward`` is the flow a request arriving on this entry must be sent
        on (the *other* party's), encoded as an authenticated token.
        """
        token = self.flow_token(toward)
        t = flow.transport
        return f"<sip:{token}@{self.sent_by(t)};transport={t};lr>"

    def flow_token(self, flow: Flow) -> str:
        raw = flow.token()
        return f"{raw}.{self._mac(raw)}"

    def _mac(self, raw: str) -> str:
        # hmac.digest: the one-shot C path, several times faster than hmac.new().
        return hmac.digest(self.secret, raw.encode(), "sha256").hex()[:20]

    def flow_from_token(self, token: str | None) -> Flow | None:
        if not token or "." not in token:
            return None
        raw, mac = token.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._mac(raw)):
            return None
        try:
            return Flow.from_token(raw)
        except ValueError:
            return None

    def is_me(self, uri: URI) -> bool:
        """True when ``uri`` addresses this server (a Route or Request-URI host)."""
        if not isinstance(uri, SipURI):
            return False
        host = uri.host.strip("[]").lower()
        if host not in (self.host.lower(), *self.addresses):
            return False
        port = uri.port
        if port is None:
            port = 5061 if uri.scheme == "sips" or uri.transport == "tls" else 5060
        return port in self.ports.values()

    def is_my_host(self, uri: URI) -> bool:
        """True when ``uri``'s host names this server, whatever the port."""
        if not isinstance(uri, SipURI):
            return False
        return uri.host.strip("[]").lower() in (self.host.lower(), *self.addresses)

    def is_my_domain(self, uri: URI) -> bool:
        return isinstance(uri, SipURI) and uri.host.lower() == self.domain
