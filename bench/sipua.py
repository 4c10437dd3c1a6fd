"""A small asyncio SIP user agent for the load generators (presence, capacity).

Standard library only (uvloop when installed): requests are built from
strings, messages are split with bytes operations, digest is MD5 with
qop=auth (RFC 7616), which is what the benchmark servers are configured to
offer first. It is deliberately *not* Conclave's own parser: the load
generator must not share the server's code or its costs. Non-INVITE
client transactions only; no retransmission over UDP on loopback (a lost
datagram shows up as a timeout, which the scenarios count as an error).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import itertools
import os
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from conclave.ops.gcpause import settle_heap, tune_collector

from .servers import DOMAIN, HOST, password

TIMEOUT = 32.0
"""Timer F (64 x T1): a request without a final response by then failed."""

T1, T2 = 0.5, 4.0
"""RFC 3261 timers: first retransmission interval, and its cap (non-INVITE)."""

CONNECT_TIMEOUT = 30.0
"""TCP connect plus TLS handshake; a server that cannot accept by then failed."""
UDP_BUFFER = 4 * 1024 * 1024
"""Socket buffers of the load generator's UDP sockets (capped by net.core.rmem_max)."""

_counter = itertools.count(1)
_CHALLENGE = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]+))')


def token() -> str:
    """A unique token for tags, branches and Call-IDs."""
    return f"{os.getpid():x}{next(_counter):x}"


@dataclass
class Message:
    """A parsed SIP message: first line, headers (lower-case names), body."""

    first: str
    headers: dict[str, list[str]]
    body: bytes

    @property
    def status(self) -> int:
        return int(self.first.split(" ", 2)[1]) if self.first.startswith("SIP/2.0") else 0

    @property
    def method(self) -> str:
        return "" if self.first.startswith("SIP/2.0") else self.first.split(" ", 1)[0]

    def get(self, name: str, default: str = "") -> str:
        values = self.headers.get(name)
        return values[0] if values else default


_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "l": "content-length",
            "c": "content-type", "m": "contact", "o": "event"}  # fmt: skip


def parse(data: bytes) -> Message:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers.setdefault(_COMPACT.get(key, key), []).append(value.strip())
    return Message(lines[0], headers, body)


def build(first: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    text = first + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return (text + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def digest(challenge: str, user: str, method: str, uri: str, nc: int = 1) -> str:
    """An Authorization value answering an MD5 ``challenge`` (qop=auth if offered)."""
    params = {m.group(1).lower(): m.group(2) or m.group(3) for m in _CHALLENGE.finditer(challenge)}
    realm, nonce = params["realm"], params["nonce"]

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{user}:{realm}:{password(user)}")
    ha2 = md5(f"{method}:{uri}")
    parts = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"',
             "algorithm=MD5"]  # fmt: skip
    if "qop" in params:
        cnonce, count = token(), f"{nc:08x}"
        response = md5(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
        parts += ["qop=auth", f"nc={count}", f'cnonce="{cnonce}"']
    else:
        response = md5(f"{ha1}:{nonce}:{ha2}")
    parts.append(f'response="{response}"')
    if "opaque" in params:
        parts.append(f'opaque="{params["opaque"]}"')
    return "Digest " + ", ".join(parts)


RequestHandler = Callable[[Message], bytes | None]
"""Called with each incoming request; returns the response to send, or None."""


def reply(request: Message, status: int = 200, reason: str = "OK") -> bytes:
    """A response echoing the request's Via, From, To, Call-ID and CSeq."""
    headers = [("Via", v) for v in request.headers.get("via", [])]
    to = request.get("to")
    if ";tag=" not in to:
        to += f";tag={token()}"
    headers += [("From", request.get("from")), ("To", to), ("Call-ID", request.get("call-id")),
                ("CSeq", request.get("cseq"))]  # fmt: skip
    return build(f"SIP/2.0 {status} {reason}", headers)


@dataclass
class Endpoint:
    """One transport flow (a UDP socket or a TLS connection) shared by many users."""

    transport: str
    on_request: RequestHandler = lambda _msg: None
    local_port: int = 0
    host: str = HOST
    _pending: dict[str, asyncio.Future[Message]] = field(default_factory=dict)
    _send: Callable[[bytes], None] = lambda _data: None
    _close: Callable[[], None] = lambda: None
    closed: bool = False
    retransmissions: int = 0

    def close(self) -> None:
        self.closed = True
        self._close()

    def via(self, branch: str) -> str:
        transport = self.transport.upper()
        return f"SIP/2.0/{transport} {self.host}:{self.local_port};branch=z9hG4bK{branch};rport"

    def contact(self, user: str) -> str:
        return f"<sip:{user}@{self.host}:{self.local_port};transport={self.transport}>"

    def received(self, data: bytes) -> None:
        msg = parse(data)
        if msg.status:
            branch = msg.get("via").partition("branch=z9hG4bK")[2].split(";", 1)[0]
            future = self._pending.get(branch)
            if future is not None and msg.status >= 200 and not future.done():
                future.set_result(msg)
            return
        answer = self.on_request(msg)
        if answer is not None:
            self._send(answer)

    async def request(
        self, method: str, uri: str, user: str, headers: list[tuple[str, str]],
        body: bytes = b"", *, call_id: str, cseq: int, from_tag: str, to: str | None = None,
    ) -> Message:  # fmt: skip
        """Send one request, answer a 401/407 challenge once, return the final response."""
        auth: tuple[str, str] | None = None
        for attempt in range(2):
            branch = token()
            hdrs = [("Via", self.via(branch)), ("Max-Forwards", "70"),
                    ("From", f"<sip:{user}@{DOMAIN}>;tag={from_tag}"),
                    ("To", to or f"<{uri}>"), ("Call-ID", call_id),
                    ("CSeq", f"{cseq + attempt} {method}"), *headers]  # fmt: skip
            if auth is not None:
                hdrs.append(auth)
            future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
            self._pending[branch] = future
            try:
                response = await self._transact(build(f"{method} {uri} SIP/2.0", hdrs, body),
                                                future)  # fmt: skip
            finally:
                self._pending.pop(branch, None)
            if response.status in (401, 407) and auth is None:
                name = "www-authenticate" if response.status == 401 else "proxy-authenticate"
                header = "Authorization" if response.status == 401 else "Proxy-Authorization"
                auth = (header, digest(response.get(name), user, method, uri))
                continue
            return response
        return response

    async def _transact(self, data: bytes, future: asyncio.Future[Message]) -> Message:
        """Send and wait for the final response; over UDP retransmit (RFC 3261 §17.1.2.2)."""
        self._send(data)
        if self.transport != "udp":
            return await asyncio.wait_for(future, TIMEOUT)
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        interval = T1
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError
            try:
                return await asyncio.wait_for(asyncio.shield(future), min(interval, remaining))
            except TimeoutError:
                self.retransmissions += 1
                self._send(data)
                interval = min(interval * 2, T2)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str | None, int]) -> None:
        self.endpoint.received(data)


async def udp_endpoint(server: tuple[str, int], on_request: RequestHandler) -> Endpoint:
    """A UDP socket on 127.0.0.1 talking to ``server``."""
    endpoint = Endpoint("udp", on_request)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Udp(endpoint), local_addr=(HOST, 0), remote_addr=server
    )
    sock = transport.get_extra_info("socket")
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        # A burst of 1000 NOTIFYs is ~700 KB: more than the default buffer.
        sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER)
    endpoint.local_port = transport.get_extra_info("sockname")[1]
    endpoint._send = transport.sendto
    endpoint._close = transport.close
    return endpoint


def _frames(buffer: bytearray) -> list[bytes]:
    """Complete messages at the front of a stream buffer (Content-Length framing)."""
    out: list[bytes] = []
    while True:
        while buffer[:2] == b"\r\n":  # keep-alive CRLFs (RFC 5626 §3.5.1)
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return out
        match = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", bytes(buffer[:end]))
        total = end + 4 + (int(match.group(1)) if match else 0)
        if len(buffer) < total:
            return out
        out.append(bytes(buffer[:total]))
        del buffer[:total]


PER_SOURCE = 50
"""Connections per source address: Conclave accepts at most 64 from one IP
(TransportLimits.max_connections_per_ip), so many simulated clients spread
over 127.1.x.y, all of them loopback addresses."""


def source_address(index: int) -> str:
    """The loopback source address for simulated client number ``index``."""
    group = index // PER_SOURCE
    return f"127.1.{group // 250}.{group % 250 + 1}"


async def tls_endpoint(
    server: tuple[str, int], context: ssl.SSLContext, on_request: RequestHandler,
    source: str = HOST,
) -> Endpoint:  # fmt: skip
    """A TLS connection to ``server`` from ``source``; incoming data is framed and dispatched."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(*server, ssl=context, server_hostname=HOST, local_addr=(source, 0)),
        CONNECT_TIMEOUT,
    )
    endpoint = Endpoint("tls", on_request, host=source)
    endpoint.local_port = writer.get_extra_info("sockname")[1]
    endpoint._send = writer.write
    endpoint._close = writer.close

    async def pump() -> None:
        buffer = bytearray()
        try:
            while data := await reader.read(65536):
                buffer += data
                for frame in _frames(buffer):
                    endpoint.received(frame)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            endpoint.closed = True
            writer.close()

    endpoint_task = asyncio.get_running_loop().create_task(pump())
    endpoint.__dict__["_task"] = endpoint_task  # keep a reference while it runs
    return endpoint


def client_context(ca_file: str) -> ssl.SSLContext:
    """Verify the server against the deployment's CA (as a real client must)."""
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = True
    return context


def event_loop_policy() -> None:
    """Use uvloop for the load generator when it is installed (it is a Conclave dependency)."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@contextlib.contextmanager
def quiet_collector() -> Iterator[None]:
    """The generator's heap treated as the server treats its own (conclave.ops.gcpause).

    A generator holding thousands of connections would otherwise pause for its
    own full garbage collections (100+ ms) and count them as server latency:
    collect and freeze what exists, and start no full collection meanwhile.
    """
    settle_heap()
    thresholds = tune_collector()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
