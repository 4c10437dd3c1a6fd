"""Typed views of individual header field values.

Each ``parse_*`` function takes one field value (one list element for list
headers, see :mod:`conclave.sip.headers`) and returns a typed object or
raises :class:`~conclave.sip.errors.RemoteProtocolError` with status 400 and
a one-line reason. The typed objects render back with ``str()``.

Address headers (From, To, Contact, Route, Record-Route) are parsed by
:mod:`conclave.sip.address`; Authorization and the challenges by
:mod:`conclave.sip.digest`.
"""

from __future__ import annotations

import re
from dataclasses import FrozenInstanceError, dataclass, field

from .errors import LocalProtocolError, RemoteProtocolError
from .grammar import SWS, TOKEN, is_token
from .limits import MAX_CSEQ, MAX_EXPIRES, MAX_MAX_FORWARDS
from .memo import memoised
from .params import Params, parse_params

# --- hosts -----------------------------------------------------------------
#   host         = hostname / IPv4address / IPv6reference
#   hostname     = *( domainlabel "." ) toplabel [ "." ]
#   IPv4address  = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT
#   IPv6reference = "[" IPv6address "]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
HOSTNAME = rf"(?:{_LABEL}\.)*{_LABEL}\.?"
IPV4 = r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"
IPV6 = r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*"
IPV6_REF = rf"\[{IPV6}\]"
HOST = rf"(?:{IPV6_REF}|{HOSTNAME})"
_HOST_RE = re.compile(HOST)
_IPV6_RE = re.compile(IPV6)
_IPV4_RE = re.compile(IPV4)


def is_host(text: str) -> bool:
    """True when ``text`` is a host per RFC 3261 §25.1 (IPv6 in brackets)."""
    if _IPV4_RE.fullmatch(text):
        return all(int(p) <= 255 for p in text.split("."))
    return _HOST_RE.fullmatch(text) is not None


# --- Via ---------------------------------------------------------------------
#   via-parm   = sent-protocol LWS sent-by *( SEMI via-params )
#   sent-protocol = protocol-name SLASH protocol-version SLASH transport
#   sent-by    = host [ COLON port ]
_VIA_RE = re.compile(
    rf"(?P<name>{TOKEN}){SWS}/{SWS}(?P<version>{TOKEN}){SWS}/{SWS}(?P<transport>{TOKEN})"
    rf"[ \t]+(?P<host>\[[^\]]*\]|[^;:\s\[\]]+)(?:{SWS}:{SWS}(?P<port>\d{{1,5}}))?"
    rf"{SWS}(?P<params>;.*)?",
    re.DOTALL,
)

BRANCH_MAGIC = "z9hG4bK"
"""RFC 3261 §8.1.1.7: branches that begin with this are globally unique."""


@dataclass(eq=False)
class Via:
    """One Via value. ``host`` keeps IPv6 brackets; ``port`` is None if absent.

    :func:`parse_via` returns a fresh one to change (a server adds
    ``received`` and ``rport``, RFC 3261 §18.2.1, RFC 3581 §4);
    :func:`peek_via` and ``message.top_via`` a read-only :class:`SharedVia`.
    """

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=Params)
    protocol: str = "SIP/2.0"

    def __eq__(self, other: object) -> bool:
        # A shared Via equals a fresh one with the same value.
        if not isinstance(other, Via):
            return NotImplemented
        return (
            self.transport == other.transport
            and self.host == other.host
            and self.port == other.port
            and self.params == other.params
            and self.protocol == other.protocol
        )

    # Defining __eq__ leaves a mutable Via unhashable; SharedVia hashes.

    def copy(self) -> Via:
        """A fresh mutable copy (even of a shared Via): change it freely."""
        return Via(self.transport, self.host, self.port, self.params.copy(), self.protocol)

    def frozen(self) -> SharedVia:
        """This Via, read-only: ``self`` if it is shared already, else a shared copy."""
        if isinstance(self, SharedVia):
            return self
        params = self.params.frozen()
        return _shared_via(self.transport, self.host, self.port, params, self.protocol)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The rport value filled in by a server (RFC 3581), or None."""
        value = self.params.get("rport")
        return int(value) if value else None

    @property
    def has_rport(self) -> bool:
        return "rport" in self.params

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def rfc3261_branch(self) -> bool:
        """True when the branch carries the magic cookie and an identifier."""
        b = self.branch
        return b is not None and b.startswith(BRANCH_MAGIC) and len(b) > len(BRANCH_MAGIC)

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{self.params}"


class SharedVia(Via):
    """A read-only :class:`Via`: what :func:`peek_via` and the message views share.

    A transaction's top Via is read for matching on every retransmission;
    one parse serves them all, so nothing may change it: assigning an
    attribute or changing its parameters raises
    :class:`~dataclasses.FrozenInstanceError`. Use ``.copy()`` to change one.
    """

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: Params | None = None,
        protocol: str = "SIP/2.0",
    ) -> None:
        # For dataclasses.replace() and direct construction; the parser and
        # frozen() use _shared_via(). The instance dict is not guarded.
        fields = self.__dict__
        fields["transport"] = transport
        fields["host"] = host
        fields["port"] = port
        fields["params"] = (Params() if params is None else params).frozen()
        fields["protocol"] = protocol

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign {name!r}: this Via is shared; copy() it")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete {name!r}: this Via is shared; copy() it")

    def __hash__(self) -> int:
        return hash((self.transport, self.host, self.port, self.params, self.protocol))


def _shared_via(
    transport: str, host: str, port: int | None, params: Params, protocol: str
) -> SharedVia:
    # Built without __init__, which SharedVia's __setattr__ would refuse.
    # ``params`` must be frozen; everything else held is immutable.
    shared = object.__new__(SharedVia)
    fields = shared.__dict__
    fields["transport"] = transport
    fields["host"] = host
    fields["port"] = port
    fields["params"] = params
    fields["protocol"] = protocol
    return shared


def parse_via(value: str) -> Via:
    """Parse one Via value (RFC 3261 §20.42, RFC 3581, RFC 5118 §4.5): a fresh Via."""
    return Via(*_via_parts(value))


def _via_parts(value: str) -> tuple[str, str, int | None, Params, str]:
    m = _VIA_RE.fullmatch(value.strip())
    if m is None:
        raise RemoteProtocolError(f"malformed Via: {value[:60]!r}")
    host = m.group("host")
    if not is_host(host):
        raise RemoteProtocolError(f"malformed Via sent-by host: {host[:60]!r}")
    port = _port(m.group("port"), "Via")
    params = parse_params(m.group("params") or "", uri=False)
    _check_via_params(params)
    protocol = f"{m.group('name')}/{m.group('version')}"
    return m.group("transport").upper(), host, port, params, protocol


def _check_via_params(params: Params) -> None:
    for name, pvalue in params.items():
        lname = name.lower()
        if lname == "branch" and (pvalue is None or not is_token(pvalue)):
            raise RemoteProtocolError("malformed Via branch")
        if lname == "received" and (pvalue is None or not _received_ok(pvalue)):
            raise RemoteProtocolError("malformed Via received")
        if lname == "rport" and pvalue is not None and not _port_ok(pvalue):
            raise RemoteProtocolError("malformed Via rport")
        if lname == "ttl" and (pvalue is None or not pvalue.isdigit() or int(pvalue) > 255):
            raise RemoteProtocolError("malformed Via ttl")
        if lname == "maddr" and (pvalue is None or not is_host(pvalue)):
            raise RemoteProtocolError("malformed Via maddr")


_PROTOCOL_RE = re.compile(rf"{TOKEN}/{TOKEN}")
_TRANSPORT_RE = re.compile(TOKEN)


def check_via(via: Via) -> None:
    """Raise :class:`LocalProtocolError` unless ``str(via)`` parses back to an equal Via.

    For a Via made or changed in code (a proxy's own, a received one stamped
    with ``received``) that is written into a message together with its
    parsed form (``message.push_via``, ``message.replace_top_via``): the check
    costs a fraction of a parse and keeps the two in agreement. The transport
    must be in upper case, as :func:`parse_via` leaves it.
    """
    transport = via.transport
    if _PROTOCOL_RE.fullmatch(via.protocol) is None:
        raise LocalProtocolError(f"invalid Via protocol {via.protocol!r}")
    if _TRANSPORT_RE.fullmatch(transport) is None or transport != transport.upper():
        raise LocalProtocolError(f"invalid Via transport {transport!r} (a token, upper case)")
    if not is_host(via.host):
        raise LocalProtocolError(f"invalid Via host {via.host!r}")
    if via.port is not None and not 0 <= via.port <= 65535:
        raise LocalProtocolError(f"Via port out of range: {via.port}")
    if via.params.uri:
        raise LocalProtocolError("Via parameters must be header parameters")
    try:
        _check_via_params(via.params)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(exc.reason) from None


MAX_SHARED_VIAS = 4096
"""Via values whose parse :func:`peek_via` remembers (emptied when full)."""


@memoised(MAX_SHARED_VIAS)
def peek_via(value: str) -> SharedVia:
    """:func:`parse_via` for readers: the result is shared and read-only.

    A transaction's top Via is read for matching several times per message
    and again for each retransmission; this parses each distinct value once.
    Changing the result raises :class:`~dataclasses.FrozenInstanceError`:
    use :func:`parse_via` (or ``.copy()``) for a Via to change.
    """
    transport, host, port, params, protocol = _via_parts(value)
    # The fresh parse is ours alone, so its params are frozen in place.
    return _shared_via(transport, host, port, params._freeze(), protocol)


def _received_ok(value: str) -> bool:
    # RFC 3261 allows IPv4address / IPv6address; RFC 5118 §4.5 asks receivers
    # to accept a bracketed IPv6reference too.
    if _IPV4_RE.fullmatch(value):
        return True
    inner = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    return _IPV6_RE.fullmatch(inner) is not None


def _port_ok(text: str) -> bool:
    return text.isdigit() and len(text) <= 5 and int(text) <= 65535


def _port(text: str | None, header: str) -> int | None:
    if text is None:
        return None
    if not _port_ok(text):
        raise RemoteProtocolError(f"{header} port out of range")
    return int(text)


# --- CSeq, Max-Forwards, Expires, Content-Length ------------------------------
_CSEQ_RE = re.compile(rf"(?P<seq>\d+)[ \t]+(?P<method>{TOKEN})")


@dataclass(frozen=True)
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


MAX_CSEQ_MEMO = 1024
"""CSeq values remembered by :func:`parse_cseq` ("1 INVITE", "2 BYE"... repeat
endlessly; :class:`CSeq` is immutable, so sharing a result is safe)."""


@memoised(MAX_CSEQ_MEMO)
def parse_cseq(value: str) -> CSeq:
    """``CSeq = 1*DIGIT LWS Method``; the number must be below 2**31 (§8.1.1.5)."""
    m = _CSEQ_RE.fullmatch(value.strip())
    if m is None:
        raise RemoteProtocolError(f"malformed CSeq: {value[:60]!r}")
    digits = m.group("seq")
    if len(digits) > 12 or int(digits) > MAX_CSEQ:
        raise RemoteProtocolError("CSeq number must be below 2**31")
    return CSeq(int(digits), m.group("method"))


def parse_delta(value: str, header: str, maximum: int) -> int:
    """A non-negative decimal integer no larger than ``maximum``."""
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise RemoteProtocolError(f"malformed {header}: {value[:40]!r}")
    # Leading zeros are legal (RFC 4475 §3.1.1.1); bound the length first so
    # int() never sees a megabyte of digits.
    stripped = text.lstrip("0") or "0"
    if len(stripped) > 20 or int(stripped) > maximum:
        raise RemoteProtocolError(f"{header} out of range")
    return int(stripped)


def parse_max_forwards(value: str) -> int:
    """``Max-Forwards = 1*DIGIT``, 0-255 (§20.22)."""
    return parse_delta(value, "Max-Forwards", MAX_MAX_FORWARDS)


def parse_expires(value: str) -> int:
    """``Expires = delta-seconds`` (§20.19)."""
    return parse_delta(value, "Expires", MAX_EXPIRES)


def parse_content_length(value: str) -> int:
    """``Content-Length = 1*DIGIT`` (§20.14). Negative values are errors (RFC 4475 ncl)."""
    return parse_delta(value, "Content-Length", 2**31 - 1)


# --- Content-Type ------------------------------------------------------------
#   media-type = m-type SLASH m-subtype *(SEMI m-parameter)
_MEDIA_RE = re.compile(rf"(?P<type>{TOKEN}){SWS}/{SWS}(?P<subtype>{TOKEN}){SWS}(?P<params>;.*)?")


@dataclass
class ContentType:
    type: str
    subtype: str
    params: Params = field(default_factory=Params)

    @property
    def mime(self) -> str:
        """``type/subtype`` in lower case, for comparisons."""
        return f"{self.type}/{self.subtype}".lower()

    def __str__(self) -> str:
        return f"{self.type}/{self.subtype}{self.params}"


def parse_content_type(value: str) -> ContentType:
    m = _MEDIA_RE.fullmatch(value.strip())
    if m is None:
        raise RemoteProtocolError(f"malformed Content-Type: {value[:60]!r}")
    return ContentType(
        m.group("type"), m.group("subtype"), parse_params(m.group("params") or "", uri=False)
    )


# --- option tags and method lists ------------------------------------------------
def parse_token(value: str, header: str) -> str:
    """One element of Allow / Supported / Require / Proxy-Require / Unsupported."""
    text = value.strip()
    if not is_token(text):
        raise RemoteProtocolError(f"malformed {header} value: {value[:40]!r}")
    return text


# --- Event, Subscription-State (RFC 6665) ----------------------------------------
_EVENT_RE = re.compile(rf"(?P<type>{TOKEN}){SWS}(?P<params>;.*)?")


@dataclass
class Event:
    package: str
    params: Params = field(default_factory=Params)

    @property
    def id(self) -> str | None:
        return self.params.get("id")

    def __str__(self) -> str:
        return f"{self.package}{self.params}"


def parse_event(value: str) -> Event:
    m = _EVENT_RE.fullmatch(value.strip())
    if m is None:
        raise RemoteProtocolError(f"malformed Event: {value[:60]!r}")
    return Event(m.group("type"), parse_params(m.group("params") or "", uri=False))


@dataclass
class SubscriptionState:
    state: str
    params: Params = field(default_factory=Params)

    @property
    def expires(self) -> int | None:
        v = self.params.get("expires")
        return int(v) if v is not None and v.isdigit() else None

    @property
    def reason(self) -> str | None:
        return self.params.get("reason")

    def __str__(self) -> str:
        return f"{self.state}{self.params}"


def parse_subscription_state(value: str) -> SubscriptionState:
    m = _EVENT_RE.fullmatch(value.strip())
    if m is None:
        raise RemoteProtocolError(f"malformed Subscription-State: {value[:60]!r}")
    params = parse_params(m.group("params") or "", uri=False)
    for key in ("expires", "retry-after"):
        v = params.get(key)
        if v is not None:
            parse_delta(v, f"Subscription-State {key}", MAX_EXPIRES)
    return SubscriptionState(m.group("type").lower(), params)


# --- Date ----------------------------------------------------------------------
#   SIP-date = rfc1123-date ; rfc1123-date = wkday "," SP date1 SP time SP "GMT"
_DATE_RE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    r"([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60) GMT"
)


def check_date(value: str) -> None:
    """Raise unless ``value`` is an RFC 1123 date in GMT (RFC 4475 baddate)."""
    if _DATE_RE.fullmatch(value.strip()) is None:
        raise RemoteProtocolError(f"malformed Date (must be RFC 1123, GMT): {value[:40]!r}")
