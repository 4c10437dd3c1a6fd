"""Flows: which socket a message came in on, so the answer can go back the same way.

A :class:`Flow` names one path between Conclave and a peer: the transport, the
peer's address as seen on the socket, our bound address and, for TCP and TLS,
the connection. Responses go back on the flow of their request (RFC 3261
§18.2.2) and RFC 5626 outbound keeps a registered flow open for requests to
the client, so the registrar stores flows and routes by them later.

A flow is plain data, which is why it lives in the sans-IO core: every layer
(transport, stack, features) passes it around, and only the transport gives it
meaning. Addresses are handled with :mod:`ipaddress`, never a socket.

:meth:`Flow.token` turns a flow into a short string for the database. It is
base64url without padding, so every character is a SIP ``token`` character
(RFC 3261 §25.1) and needs no quoting. The token is not authenticated: whoever
puts it on the wire must protect it if a peer could tamper with it, and it
only means something to the process that issued it.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass
from typing import Final

from conclave.sip.memo import memoised

TRANSPORTS: Final = ("udp", "tcp", "tls", "wss")
"""Transport names, in the order of their code in a token (``wss``: SIP over a
WebSocket on the web listener, RFC 7118; each WebSocket message is one SIP message)."""

STREAM_TRANSPORTS: Final = frozenset({"tcp", "tls", "wss"})
"""Connection-oriented: reliable, and answered on the connection a request came on."""

SECURE_TRANSPORTS: Final = frozenset({"tls", "wss"})

MESSAGE_TRANSPORTS: Final = frozenset({"udp", "wss"})
"""Each datagram or WebSocket message carries exactly one SIP message: no stream framing."""

_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,200}")
_VERSION = 0  # bits 6-7 of the first token byte; bump if the layout changes
_LOCAL_V6 = 0x04
_REMOTE_V6 = 0x08
_LOCAL_SCOPE = 0x10
_REMOTE_SCOPE = 0x20
_MAX_CONN_ID = (1 << 63) - 1
_V4_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96 (RFC 4291 §2.5.5.2)


MAX_HOST_MEMO: Final = 8192
"""Canonical texts remembered (:func:`canonical_host` runs for every datagram
and connection, and the same peers come back): about 1 MiB at most, and a
flood of new source addresses only empties the memo now and then."""


@memoised(MAX_HOST_MEMO)
def canonical_host(host: str) -> str:
    """The canonical text of an IP address literal, as the socket layer prints it.

    Addresses from different event loops (asyncio, uvloop) and from tokens must
    compare equal, so every address in a :class:`Flow` goes through here. The
    text is what ``inet_ntop`` prints (RFC 5952, with IPv4-mapped and
    IPv4-compatible addresses ending in a dotted quad). An IPv6 zone
    (``fe80::1%eth0``) is kept. Raises ValueError for anything that is not an
    IP literal: nothing here resolves names (RFC 3263 lookups belong to the
    layer above).
    """
    addr, sep, zone = host.partition("%")
    packed = _packed(addr, host)
    if sep and (len(packed) == 4 or not zone):
        raise ValueError(f"not an IP address: {host!r}")
    text = _text(packed)
    return f"{text}%{zone}" if sep else text


def _packed(addr: str, original: str) -> bytes:
    try:
        if ":" in addr:
            return ipaddress.IPv6Address(addr).packed
        return ipaddress.IPv4Address(addr).packed
    except ValueError:
        raise ValueError(f"not an IP address: {original!r}") from None


def _text(packed: bytes) -> str:
    """``inet_ntop``'s text for a packed address."""
    if len(packed) == 4:
        return str(ipaddress.IPv4Address(packed))
    if packed.startswith(_V4_MAPPED):
        return f"::ffff:{ipaddress.IPv4Address(packed[12:])}"
    if packed[:12] == bytes(12) and packed[12:14] != bytes(2):
        # IPv4-compatible (deprecated, RFC 4291 §2.5.5.1), which inet_ntop
        # still prints with a dotted quad.
        return f"::{ipaddress.IPv4Address(packed[12:])}"
    return ipaddress.IPv6Address(packed).compressed


@dataclass(frozen=True, slots=True)
class Flow:
    """One path to a peer. Hashable; equal flows are the same path.

    ``conn_id`` is 0 for UDP; for TCP and TLS it identifies the connection, so a
    flow whose connection has closed stays dead even if the peer reconnects
    from the same address.
    """

    transport: str
    """``"udp"``, ``"tcp"`` or ``"tls"``."""
    remote: tuple[str, int]
    """The peer's ``(ip, port)`` as seen on the socket."""
    local: tuple[str, int]
    """Our bound ``(ip, port)`` for that socket."""
    conn_id: int = 0
    """0 for UDP; the connection's unique id otherwise."""

    @property
    def reliable(self) -> bool:
        """True on TCP, TLS and WebSocket: no retransmissions needed (RFC 3261 §17.1.1.2)."""
        return self.transport in STREAM_TRANSPORTS

    @property
    def secure(self) -> bool:
        """True on TLS and on WebSocket over TLS (RFC 7118 §5.3: a secure transport)."""
        return self.transport in SECURE_TRANSPORTS

    def __str__(self) -> str:
        suffix = f"#{self.conn_id}" if self.conn_id else ""
        return (
            f"{self.transport}:{format_address(self.local)}<->{format_address(self.remote)}{suffix}"
        )

    def token(self) -> str:
        """A compact string form; :meth:`from_token` gives back an equal flow.

        Layout before base64url: one flag byte (transport code, address
        families, zones, version), the connection id as an unsigned LEB128
        varint, then the local and the remote address, each as the packed IP,
        a 2-octet port and, for an IPv6 zone, a length-prefixed zone name.
        Raises ValueError if the flow does not hold IP literals.
        """
        if self.transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {self.transport!r}")
        if not 0 <= self.conn_id <= _MAX_CONN_ID:
            raise ValueError(f"connection id out of range: {self.conn_id}")
        flags = TRANSPORTS.index(self.transport) | _VERSION << 6
        local, local_flags = _pack_address(self.local)
        remote, remote_flags = _pack_address(self.remote)
        if local_flags & 1:
            flags |= _LOCAL_V6
        if local_flags & 2:
            flags |= _LOCAL_SCOPE
        if remote_flags & 1:
            flags |= _REMOTE_V6
        if remote_flags & 2:
            flags |= _REMOTE_SCOPE
        out = bytearray([flags])
        out += _varint(self.conn_id)
        out += local
        out += remote
        return base64.urlsafe_b64encode(bytes(out)).rstrip(b"=").decode("ascii")

    @classmethod
    def from_token(cls, token: str) -> Flow:
        """The flow that :meth:`token` encoded. Raises ValueError on anything else.

        Tokens come back from the network (in Route parameters), so parsing is
        strict: only the exact string :meth:`token` would produce is accepted.
        """
        if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
            raise ValueError("malformed flow token")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            flow = _unpack(raw)
        except (ValueError, IndexError):
            raise ValueError("malformed flow token") from None
        if flow.token() != token:  # a non-canonical spelling of the same bytes
            raise ValueError("malformed flow token")
        return flow


def format_address(address: tuple[str, int]) -> str:
    """``host:port`` for logs, with IPv6 hosts in brackets."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _pack_address(address: tuple[str, int]) -> tuple[bytes, int]:
    """Packed form of one address and its flag bits (1 = IPv6, 2 = has a zone)."""
    host, port = address
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    addr, sep, zone = host.partition("%")
    ip = _packed(addr, host)
    v6 = len(ip) == 16
    packed = ip + port.to_bytes(2, "big")
    flags = 1 if v6 else 0
    if sep:
        name = zone.encode("utf-8")
        if not v6 or not 0 < len(name) < 256:
            raise ValueError(f"bad IPv6 zone in {host!r}")
        packed += bytes([len(name)]) + name
        flags |= 2
    return packed, flags


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _unpack(raw: bytes) -> Flow:
    flags = raw[0]
    code = flags & 0x03
    if flags >> 6 != _VERSION or code >= len(TRANSPORTS):
        raise ValueError("unknown token version or transport")
    pos = 1
    conn_id = shift = 0
    while True:
        byte = raw[pos]
        pos += 1
        conn_id |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
        if shift > 63:
            raise ValueError("connection id too long")
    local, pos = _unpack_address(raw, pos, bool(flags & _LOCAL_V6), bool(flags & _LOCAL_SCOPE))
    remote, pos = _unpack_address(raw, pos, bool(flags & _REMOTE_V6), bool(flags & _REMOTE_SCOPE))
    if pos != len(raw):
        raise ValueError("trailing bytes")
    return Flow(TRANSPORTS[code], remote, local, conn_id)


def _unpack_address(raw: bytes, pos: int, v6: bool, zoned: bool) -> tuple[tuple[str, int], int]:
    size = 16 if v6 else 4
    end = pos + size + 2
    if end > len(raw):
        raise ValueError("truncated address")
    host = _text(raw[pos : pos + size])
    port = int.from_bytes(raw[pos + size : end], "big")
    if zoned:
        length = raw[end]
        zone = raw[end + 1 : end + 1 + length]
        if len(zone) != length:
            raise ValueError("truncated zone")
        host = f"{host}%{zone.decode('utf-8')}"
        end += 1 + length
    return (host, port), end
