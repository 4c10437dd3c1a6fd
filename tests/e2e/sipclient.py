"""A tiny scripted SIP client for negative end-to-end tests over real sockets.

It builds requests as text, sends them over UDP, TCP or TLS, and reads
responses with Conclave's own parser (a response that does not parse fails
the test). Digest answers use :func:`conclave.sip.digest.authorization_value`.
"""

from __future__ import annotations

import itertools
import os
import socket
import ssl
from dataclasses import dataclass, field

from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin, Subprotocol

from conclave.sip.digest import authorization_value, parse_challenge
from conclave.sip.framing import Frame, StreamFramer
from conclave.sip.message import Request, Response, make_response
from conclave.sip.parser import parse_message

TIMEOUT = 10.0


@dataclass
class SipClient:
    transport: str
    port: int
    domain: str = "localhost"
    ca: str | None = None
    host: str = "127.0.0.1"
    """The local address to send from (any of 127.0.0.0/8 works on Linux)."""
    server: str = "127.0.0.1"
    """The server's address."""
    server_name: str = "127.0.0.1"
    """The name its TLS certificate must carry."""
    cert: tuple[str, str] | None = None
    """A client certificate and key to present over TLS."""
    _sock: socket.socket | None = None
    _framer: StreamFramer = field(default_factory=StreamFramer)
    _pending: list[bytes] = field(default_factory=list)
    _cseq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    origin: str | None = None
    """The Origin a browser would send, on ``wss`` (None: none, as a non-browser client)."""
    _ws: ClientConnection | None = None

    def __post_init__(self) -> None:
        if self.transport == "wss":  # SIP over WebSocket (RFC 7118), one message per frame
            raw = socket.create_connection(
                (self.server, self.port), timeout=TIMEOUT, source_address=(self.host, 0)
            )
            ctx = ssl.create_default_context(cafile=self.ca)
            self._ws = connect(
                f"wss://{self.server_name}:{self.port}/sip",
                sock=raw,
                ssl=ctx,
                server_hostname=self.server_name,
                subprotocols=[Subprotocol("sip")],
                origin=None if self.origin is None else Origin(self.origin),
                open_timeout=TIMEOUT,
            ).__enter__()  # closed by close()
            self._sock = self._ws.socket  # the TLS socket websockets wrapped around raw
            return
        if self.transport == "udp":
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.bind((self.host, 0))
        else:
            raw = socket.create_connection(
                (self.server, self.port), timeout=TIMEOUT, source_address=(self.host, 0)
            )
            if self.transport == "tls":
                ctx = ssl.create_default_context(cafile=self.ca)
                if self.cert is not None:
                    ctx.load_cert_chain(*self.cert)
                raw = ctx.wrap_socket(raw, server_hostname=self.server_name)
            self._sock = raw
        self._sock.settimeout(TIMEOUT)

    @property
    def local_port(self) -> int:
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
        if self._sock is not None:
            self._sock.close()

    def send_raw(self, data: bytes) -> None:
        assert self._sock is not None
        if self._ws is not None:
            self._ws.send(data.decode())
        elif self.transport == "udp":
            self._sock.sendto(data, (self.server, self.port))
        else:
            self._sock.sendall(data)

    def recv_raw(self, timeout: float = TIMEOUT) -> bytes:
        """One datagram (or whatever a stream read returns), unparsed."""
        assert self._sock is not None
        self._sock.settimeout(timeout)
        return self._sock.recv(65535)

    def recv_message(self, timeout: float = TIMEOUT) -> Request | Response:
        assert self._sock is not None
        if self._ws is not None:
            data = self._ws.recv(timeout)
            return parse_message(data if isinstance(data, bytes) else data.encode())
        self._sock.settimeout(timeout)
        if self.transport == "udp":
            data = self._sock.recv(65535)
            return parse_message(data)
        while not self._pending:
            chunk = self._sock.recv(65535)
            if not chunk:
                raise ConnectionError("server closed the connection")
            for event in self._framer.feed(chunk):
                if isinstance(event, Frame):
                    self._pending.append(event.data)
        return parse_message(self._pending.pop(0), datagram=False)

    def recv(self, timeout: float = TIMEOUT) -> Response:
        msg = self.recv_message(timeout)
        assert isinstance(msg, Response), msg
        return msg

    def recv_request(self, timeout: float = TIMEOUT) -> Request:
        msg = self.recv_message(timeout)
        assert isinstance(msg, Request), msg
        return msg

    def reply(self, request: Request, status: int, reason: str | None = None) -> None:
        self.send_raw(
            make_response(request, status, reason, to_tag=os.urandom(4).hex()).serialise()
        )

    def request(
        self,
        method: str,
        uri: str,
        *,
        from_user: str,
        to: str | None = None,
        headers: list[str] | None = None,
        body: bytes = b"",
        call_id: str | None = None,
        from_domain: str | None = None,
    ) -> bytes:
        branch = "z9hG4bK" + os.urandom(8).hex()
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/{self.transport.upper()} {self.host}:{self.local_port}"
            f";branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:{from_user}@{from_domain or self.domain}>;tag={os.urandom(4).hex()}",
            f"To: <{to or uri}>",
            f"Call-ID: {call_id or os.urandom(8).hex()}",
            f"CSeq: {next(self._cseq)} {method}",
            f"Contact: <sip:{from_user}@{self.host}:{self.local_port};transport={self.transport}>",
            *(headers or []),
            f"Content-Length: {len(body)}",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def send(self, *args: object, **kwargs: object) -> Response:
        self.send_raw(self.request(*args, **kwargs))  # type: ignore[arg-type]
        return self.final()

    def final(self, timeout: float = TIMEOUT) -> Response:
        while True:
            resp = self.recv(timeout)
            if resp.status >= 200:
                return resp


def digest_header(
    challenge_resp: Response,
    *,
    user: str,
    password: str,
    method: str,
    uri: str,
    nc: int = 1,
    algorithm: str = "SHA-256",
) -> str:
    name = "WWW-Authenticate" if challenge_resp.status == 401 else "Proxy-Authenticate"
    challenges = [parse_challenge(v) for v in challenge_resp.headers.get_all(name)]
    challenge = next(c for c in challenges if c.algorithm == algorithm)
    value = authorization_value(
        challenge, username=user, password=password, method=method, uri=uri,
        cnonce=os.urandom(4).hex(), nc=nc,
    )  # fmt: skip
    header = "Authorization" if challenge_resp.status == 401 else "Proxy-Authorization"
    return f"{header}: {value}"
