"""URIs: SIP and SIPS (RFC 3261 §19.1), tel (RFC 3966), and everything else.

:func:`parse_uri` turns text into one of three types:

* :class:`SipURI` for ``sip:`` and ``sips:`` (scheme names are
  case-insensitive and stored lowercased);
* :class:`TelURI` for ``tel:``;
* :class:`AbsoluteURI` for any other scheme, its text kept exactly, so that
  the caller can answer 416 (RFC 3261 §8.2.2.1) or carry it unchanged.

The grammar (RFC 3261 §25.1, with RFC 5954's correction)::

    SIP-URI   = "sip:" [ userinfo ] hostport uri-parameters [ headers ]
    userinfo  = ( user / telephone-subscriber ) [ ":" password ] "@"
    user      = 1*( unreserved / escaped / user-unreserved )
    user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
    password  = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
    hostport  = host [ ":" port ]
    host      = hostname / IPv4address / IPv6reference
    headers   = "?" header *( "&" header )
    header    = hname "=" hvalue
    hname     = 1*( hnv-unreserved / unreserved / escaped )
    hvalue    = *( hnv-unreserved / unreserved / escaped )
    hnv-unreserved = "[" / "]" / "/" / "?" / ":" / "+" / "$"

User, password, parameter and header text is percent-decoded exactly once
(§19.1.2; ``%2541`` becomes ``%41`` and stays so) into ``str`` using
``surrogateescape``, so octets that are not UTF-8 (and ``%00``) survive.
``str()`` escapes again only what must be escaped, so ``parse_uri(str(u)) ==
u`` always holds, while the text may differ from what was received (for
example ``%75ser`` is rendered ``user``); the two forms are equivalent under
§19.1.4. The parser raises nothing but :class:`RemoteProtocolError` (400).

URIs are immutable values (frozen dataclasses with frozen parameters and a
tuple of headers), so one parsed URI can be shared by every message and memo
that names it. Derive a changed one with ``copy(**changes)``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from typing import TypeAlias

from .errors import LocalProtocolError, RemoteProtocolError
from .grammar import percent_decode, percent_encode
from .limits import MAX_PARAMS
from .memo import memoised
from .params import Params, parse_params

#   scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:")

#   Every character a SIP URI may contain anywhere: reserved / unreserved /
#   "%" (escapes) / "[" "]" (IPv6 references, param-unreserved). Anything
#   else (LWS, "<", ">", '"', controls, raw non-ASCII) is an error (RFC 4475
#   §3.1.2.7, §3.1.2.8).
_SIP_CHARS_RE = re.compile(r"[A-Za-z0-9\-_.!~*'();/?:@&=+$,%\[\]]*")
_ESC = r"%[0-9A-Fa-f]{2}"

USER_SAFE = "-_.!~*'()&=+$,;?/"
"""Characters besides alphanumerics a user part carries unescaped."""
_USER_RE = re.compile(rf"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|{_ESC})+")

PASSWORD_SAFE = "-_.!~*'()&=+$,"
"""Characters besides alphanumerics a password carries unescaped."""
_PASSWORD_RE = re.compile(rf"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|{_ESC})*")

HEADER_SAFE = "-_.!~*'()[]/?:+$"
"""Characters besides alphanumerics a URI header name or value carries unescaped."""
_HNV_RE = re.compile(rf"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|{_ESC})*")

#   domainlabel = alphanum / alphanum *( alphanum / "-" ) alphanum
#   toplabel    = ALPHA / ALPHA *( alphanum / "-" ) alphanum
_DOMAINLABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?")
_TOPLABEL_RE = re.compile(r"[A-Za-z](?:[A-Za-z0-9\-]*[A-Za-z0-9])?")
#   IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT
_IPV4_RE = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
_IPV6_CHARS_RE = re.compile(r"[0-9A-Fa-f:.]+")
#   RFC 3261's IPv6address = hexpart [ ":" IPv4address ] lets hexpart end in
#   "::" and still add ":" before the IPv4 part. RFC 5118 §4.10 asks
#   receivers to tolerate the resulting "x:::1.2.3.4".
_IPV6_ABNF_BUG_RE = re.compile(r":::(?=[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$)")

#   RFC 3966: global-number-digits = "+" *phonedigit DIGIT *phonedigit
#             local-number-digits  = *phonedigit-hex (HEXDIG / "*" / "#") *phonedigit-hex
#             visual-separator     = "-" / "." / "(" / ")"
_TEL_GLOBAL_CHARS_RE = re.compile(r"\+[0-9\-.()]+")
_TEL_LOCAL_CHARS_RE = re.compile(r"(?:[0-9A-Fa-f*#\-.()]|%23)+")
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")

#   absoluteURI (RFC 2396 via RFC 3261 §25.1): scheme ":" 1*uric, with "[" "]"
#   allowed as RFC 3986 does for IP literals.
_ABSOLUTE_REST_RE = re.compile(rf"(?:[A-Za-z0-9\-_.!~*'();/?:@&=+$,\[\]]|{_ESC})+")

_EQUIVALENCE_STRICT_PARAMS = frozenset({"user", "ttl", "method", "maddr", "transport"})
"""URI parameters that §19.1.4 says never match when present in only one URI."""


# --- hosts and ports ----------------------------------------------------------


def _ipv6(inner: str) -> ipaddress.IPv6Address | None:
    if _IPV6_CHARS_RE.fullmatch(inner) is None or ":" not in inner:
        return None
    try:
        return ipaddress.IPv6Address(_IPV6_ABNF_BUG_RE.sub("::", inner, count=1))
    except ValueError:
        return None


def _ipv4(text: str) -> ipaddress.IPv4Address | None:
    if _IPV4_RE.fullmatch(text) is None:
        return None
    octets = [int(p) for p in text.split(".")]
    if any(o > 255 for o in octets):
        return None
    return ipaddress.IPv4Address(bytes(octets))


def _is_hostname(text: str) -> bool:
    #   hostname = *( domainlabel "." ) toplabel [ "." ]
    # Checked label by label so that hostile input costs linear time.
    *labels, top = (text[:-1] if text.endswith(".") else text).split(".")
    return _TOPLABEL_RE.fullmatch(top) is not None and all(
        _DOMAINLABEL_RE.fullmatch(label) is not None for label in labels
    )


def check_host(host: str) -> None:
    """Raise RemoteProtocolError (400) unless ``host`` is an RFC 3261 host.

    IPv6 addresses must be in brackets (RFC 5118 §4.2); the three-colon form
    of RFC 5118 §4.10 is tolerated; escapes are never allowed in a host.
    """
    _checked_host(host)


MAX_HOST_MEMO = 4096
"""Hosts remembered as valid by :func:`check_host`: a handful of names and
addresses appear in nearly every message, and checking one costs several
regex runs; the bound keeps a flood of invented hosts from growing memory."""


@memoised(MAX_HOST_MEMO)
def _checked_host(host: str) -> None:
    if not host:
        raise RemoteProtocolError("URI has no host")
    _check_host(host)


def _check_host(host: str) -> None:
    if host[0] == "[":
        if host[-1] != "]" or _ipv6(host[1:-1]) is None:
            raise RemoteProtocolError(f"invalid IPv6 reference {host[:60]!r}")
    elif _IPV4_RE.fullmatch(host):
        if _ipv4(host) is None:
            raise RemoteProtocolError(f"invalid IPv4 address {host[:60]!r}")
    elif "%" in host:
        raise RemoteProtocolError("escaped characters are not allowed in a host")
    elif not _is_hostname(host):
        raise RemoteProtocolError(f"invalid host {host[:60]!r}")


def host_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address of an IP-literal host (IPv6 in brackets), or None for a name."""
    if host.startswith("[") and host.endswith("]"):
        return _ipv6(host[1:-1])
    return _ipv4(host)


def is_ip_address(text: str) -> bool:
    """True when ``text`` is an IPv4 or IPv6 address written bare (no brackets).

    This is how a host is written outside a URI: in a certificate's names (an
    IP address SAN rather than a DNS name), a listening address, ``--host``.
    Inside a SIP URI or a Via an IPv6 host is bracketed; use :func:`host_ip`.
    """
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _same_host(a: str, b: str) -> bool:
    # RFC 5954 §4: textual forms of one IP address match; names compare
    # case-insensitively; an address never matches a name (§19.1.4).
    ip_a, ip_b = host_ip(a), host_ip(b)
    if ip_a is not None or ip_b is not None:
        return ip_a == ip_b
    return a.lower() == b.lower()


def _parse_port(text: str) -> int:
    #   port = 1*DIGIT, and it is 16 bits on the wire (§18).
    if not text.isascii() or not text.isdigit():
        raise RemoteProtocolError(f"invalid port {text[:20]!r}")
    significant = text.lstrip("0")
    if len(significant) > 5 or int(significant or "0") > 65535:
        raise RemoteProtocolError(f"port out of range {text[:20]!r}")
    return int(significant or "0")


def _split_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise RemoteProtocolError("unterminated IPv6 reference")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and rest[0] != ":":
            raise RemoteProtocolError(f"unexpected text after IPv6 reference {rest[:20]!r}")
        port_text = rest[1:] if rest else None
    else:
        if text.count(":") > 1:
            # RFC 5118 §4.2: an IPv6 address must be enclosed in brackets.
            raise RemoteProtocolError("IPv6 address in a URI must be enclosed in [ ]")
        host, colon, port = text.partition(":")
        port_text = port if colon else None
    check_host(host)
    return host, None if port_text is None else _parse_port(port_text)


def _local(exc: RemoteProtocolError) -> LocalProtocolError:
    return LocalProtocolError(exc.reason)


def _uri_params(params: Params) -> Params:
    # URI parameters, read-only: no copy for what the parser built.
    return params.frozen() if params.uri else Params(params.items(), uri=True)._freeze()


# --- SIP and SIPS -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SipURI:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1); immutable.

    ``user`` and ``password`` hold decoded text (None when absent; a present
    but empty password is ``""``). ``host`` is as received, IPv6 in brackets.
    ``params`` are decoded URI parameters (frozen); ``headers`` decoded
    ``(name, value)`` pairs in order. ``==`` is structural; use
    :meth:`equivalent` for the §19.1.4 comparison. Construction checks scheme,
    user, host and port and raises :class:`LocalProtocolError` if they could
    not be rendered; it keeps a frozen copy of ``params`` and a tuple of
    ``headers``, so the caller's own lists stay theirs.
    """

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str
    port: int | None = None
    params: Params = field(default_factory=lambda: Params(uri=True))
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        scheme = self.scheme.lower()
        if scheme != self.scheme:
            object.__setattr__(self, "scheme", scheme)
        if self.scheme not in ("sip", "sips"):
            raise LocalProtocolError(f"not a SIP scheme: {self.scheme!r}")
        if self.user == "":
            raise LocalProtocolError("user part must be None or non-empty")
        if self.password is not None and self.user is None:
            raise LocalProtocolError("a password needs a user")
        try:
            check_host(self.host)
        except RemoteProtocolError as exc:
            raise _local(exc) from None
        if self.port is not None and not 0 <= self.port <= 65535:
            raise LocalProtocolError(f"port out of range: {self.port}")
        if type(self.headers) is not tuple:
            object.__setattr__(self, "headers", tuple(self.headers))
        if any(not name for name, _ in self.headers):
            raise LocalProtocolError("URI header names must be non-empty")
        object.__setattr__(self, "params", _uri_params(self.params))

    # --- convenience views -------------------------------------------------

    @property
    def secure(self) -> bool:
        """True for ``sips:`` (RFC 3261 §19.1: TLS on every hop)."""
        return self.scheme == "sips"

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lowercased, or None (§19.1.1)."""
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def maddr(self) -> str | None:
        """The ``maddr`` parameter: where to send instead of ``host`` (§19.1.1)."""
        return self.params.get("maddr")

    @property
    def lr(self) -> bool:
        """True when the ``lr`` flag marks a loose router (§19.1.1, §16.12)."""
        return "lr" in self.params

    @property
    def user_param(self) -> str | None:
        """The ``user`` parameter lowercased (``phone``, ``ip``...), or None."""
        value = self.params.get("user")
        return value.lower() if value else None

    @property
    def method_param(self) -> str | None:
        """The ``method`` parameter (case-sensitive, as methods are), or None."""
        return self.params.get("method")

    @property
    def host_port(self) -> str:
        """``host`` or ``host:port``, as in a Via sent-by."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    # --- derived URIs ------------------------------------------------------

    def copy(self, **changes: object) -> SipURI:
        """This URI with ``changes`` applied (``copy(user="bob")``); checked as a new one."""
        return replace(self, **changes)  # type: ignore[arg-type]

    # --- comparison and output ---------------------------------------------

    def equivalent(self, other: URI) -> bool:
        """RFC 3261 §19.1.4 URI equality (with RFC 5954 §4 for IP addresses).

        Userinfo is compared case-sensitively after unescaping; host,
        parameter names and values case-insensitively; ``user``, ``ttl``,
        ``method``, ``maddr`` and ``transport`` must match if either URI has
        them; other parameters only if both do; headers must all match
        (names case-insensitive, values exactly, order ignored).

        Components are stored decoded, so an escaped *reserved* character
        (``%3B``) compares equal to the literal one (``;``), which §19.1.4
        strictly would not; nothing routes differently on that distinction.
        """
        if not isinstance(other, SipURI) or self.scheme != other.scheme:
            return False
        if self.user != other.user or self.password != other.password:
            return False
        if self.port != other.port or not _same_host(self.host, other.host):
            return False
        mine = {n.lower(): v for n, v in self.params.items()}
        theirs = {n.lower(): v for n, v in other.params.items()}
        for name in mine.keys() | theirs.keys():
            if name in mine and name in theirs:
                a, b = mine[name], theirs[name]
                if (a is None) != (b is None) or (a or "").lower() != (b or "").lower():
                    return False
            elif name in _EQUIVALENCE_STRICT_PARAMS:
                return False
        return sorted((n.lower(), v) for n, v in self.headers) == sorted(
            (n.lower(), v) for n, v in other.headers
        )

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(percent_encode(self.user, USER_SAFE))
            if self.password is not None:
                out += [":", percent_encode(self.password, PASSWORD_SAFE)]
            out.append("@")
        out.append(self.host_port)
        out.append(str(self.params))
        if self.headers:
            out.append("?")
            out.append(
                "&".join(
                    percent_encode(n, HEADER_SAFE) + "=" + percent_encode(v, HEADER_SAFE)
                    for n, v in self.headers
                )
            )
        return "".join(out)


def _parse_sip(scheme: str, rest: str) -> SipURI:
    if _SIP_CHARS_RE.fullmatch(rest) is None:
        bad = next(c for c in rest if _SIP_CHARS_RE.fullmatch(c) is None)
        raise RemoteProtocolError(f"invalid character {bad!r} in SIP URI")
    user: str | None = None
    password: str | None = None
    # '@' is legal in no component but userinfo's terminator, so the first
    # one ends the userinfo even though user may contain ';' '?' '/' (§25.1).
    userinfo, at, hostpart = rest.partition("@")
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        if _USER_RE.fullmatch(user_text) is None:
            raise RemoteProtocolError(f"invalid user part {user_text[:60]!r}")
        if colon and _PASSWORD_RE.fullmatch(password_text) is None:
            raise RemoteProtocolError("invalid password in URI")
        user = percent_decode(user_text)
        password = percent_decode(password_text) if colon else None
    else:
        hostpart = rest
    head, qmark, header_text = hostpart.partition("?")
    hostport, semi, param_text = head.partition(";")
    host, port = _split_hostport(hostport)
    params = parse_params(semi + param_text, uri=True)._freeze()
    headers = _parse_headers(header_text) if qmark else ()
    return _parsed_sip_uri(scheme, user, password, host, port, params, headers)


def _parsed_sip_uri(
    scheme: str,
    user: str | None,
    password: str | None,
    host: str,
    port: int | None,
    params: Params,
    headers: tuple[tuple[str, str], ...],
) -> SipURI:
    # The parser has checked every part __post_init__ would (scheme lowercased,
    # user non-empty, host and port valid, header names non-empty, params
    # frozen URI parameters), so the URI is built without repeating that:
    # every Request-URI and every new address value goes through here.
    uri = object.__new__(SipURI)
    fields = uri.__dict__
    fields["scheme"] = scheme
    fields["user"] = user
    fields["password"] = password
    fields["host"] = host
    fields["port"] = port
    fields["params"] = params
    fields["headers"] = headers
    return uri


def _parse_headers(text: str) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    for piece in text.split("&"):
        if len(headers) >= MAX_PARAMS:
            raise RemoteProtocolError(f"more than {MAX_PARAMS} URI headers")
        name, eq, value = piece.partition("=")
        if not name or not eq:
            raise RemoteProtocolError("URI header must be hname=hvalue")
        if _HNV_RE.fullmatch(name) is None or _HNV_RE.fullmatch(value) is None:
            raise RemoteProtocolError(f"invalid URI header {name[:40]!r}")
        headers.append((percent_decode(name), percent_decode(value)))
    return tuple(headers)


# --- tel ----------------------------------------------------------------------


def _tel_number_ok(number: str) -> bool:
    if number.startswith("+"):
        return _TEL_GLOBAL_CHARS_RE.fullmatch(number) is not None and any(
            c.isdigit() for c in number
        )
    return _TEL_LOCAL_CHARS_RE.fullmatch(number) is not None and any(
        c not in "-.()" for c in number
    )


def _tel_normal(text: str) -> str:
    return text.replace("%23", "#").translate(_VISUAL_SEPARATORS).lower()


@dataclass(frozen=True, kw_only=True)
class TelURI:
    """A ``tel:`` URI (RFC 3966): ``number`` as received, plus decoded params; immutable.

    ``number`` keeps its visual separators (``+1-201-555-0123``); use
    :attr:`digits` for the bare digits. A local number should carry a
    ``phone-context`` (RFC 3966 §5.1.5); that is not enforced here.
    """

    number: str
    params: Params = field(default_factory=lambda: Params(uri=True))

    def __post_init__(self) -> None:
        if not _tel_number_ok(self.number):
            raise LocalProtocolError(f"invalid telephone number {self.number!r}")
        object.__setattr__(self, "params", _uri_params(self.params))

    @property
    def scheme(self) -> str:
        return "tel"

    @property
    def is_global(self) -> bool:
        """True for an E.164 number written with a leading ``+``."""
        return self.number.startswith("+")

    @property
    def digits(self) -> str:
        """The number without visual separators, hex digits lowercased."""
        return _tel_normal(self.number)

    @property
    def phone_context(self) -> str | None:
        return self.params.get("phone-context")

    @property
    def extension(self) -> str | None:
        return self.params.get("ext")

    def copy(self, **changes: object) -> TelURI:
        """This URI with ``changes`` applied; checked as a new one."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def equivalent(self, other: URI) -> bool:
        """RFC 3966 §4: separators ignored, case-insensitive, params unordered."""
        if not isinstance(other, TelURI) or self.is_global != other.is_global:
            return False
        return self.digits == other.digits and self._param_key() == other._param_key()

    def _param_key(self) -> dict[str, str | None]:
        key: dict[str, str | None] = {}
        for name, value in self.params.items():
            lname = name.lower()
            if value is not None and (
                lname in ("ext", "isub") or (lname == "phone-context" and value[:1] == "+")
            ):
                value = _tel_normal(value)
            key[lname] = None if value is None else value.lower()
        return key

    def __str__(self) -> str:
        return f"tel:{self.number}{self.params}"


def _parse_tel(rest: str) -> TelURI:
    number, semi, param_text = rest.partition(";")
    if not _tel_number_ok(number):
        raise RemoteProtocolError(f"invalid telephone number {number[:40]!r}")
    return TelURI(number=number, params=parse_params(semi + param_text, uri=True)._freeze())


# --- everything else ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AbsoluteURI:
    """A URI of any other scheme (RFC 3261 §19.1, absoluteURI), kept verbatim; immutable.

    ``scheme`` is as received; ``opaque`` is everything after the first ``:``.
    A request for one of these normally gets 416 (RFC 3261 §8.2.2.1).
    """

    scheme: str
    opaque: str

    def __post_init__(self) -> None:
        if _SCHEME_RE.fullmatch(self.scheme + ":") is None:
            raise LocalProtocolError(f"invalid URI scheme {self.scheme!r}")
        if _ABSOLUTE_REST_RE.fullmatch(self.opaque) is None:
            raise LocalProtocolError(f"invalid URI text {self.opaque!r}")

    def copy(self, **changes: object) -> AbsoluteURI:
        """This URI with ``changes`` applied; checked as a new one."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def equivalent(self, other: URI) -> bool:
        """Scheme compared case-insensitively, the rest exactly."""
        return (
            isinstance(other, AbsoluteURI)
            and self.scheme.lower() == other.scheme.lower()
            and self.opaque == other.opaque
        )

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


def _parse_absolute(scheme: str, rest: str) -> AbsoluteURI:
    if _ABSOLUTE_REST_RE.fullmatch(rest) is None:
        raise RemoteProtocolError(f"invalid {scheme[:20]!r} URI")
    return AbsoluteURI(scheme=scheme, opaque=rest)


URI: TypeAlias = SipURI | TelURI | AbsoluteURI
"""Any URI :func:`parse_uri` can return."""


def parse_uri(text: str) -> URI:
    """Parse a URI (Request-URI, or the inside of ``<...>`` in a header).

    Returns a :class:`SipURI`, :class:`TelURI` or :class:`AbsoluteURI`.
    The whole of ``text`` must be the URI: LWS, ``<`` and ``>`` are errors.
    The caller decides what an unsupported scheme means (416 for a
    Request-URI, RFC 3261 §8.2.2.1). Raises only :class:`RemoteProtocolError`.
    """
    m = _SCHEME_RE.match(text)
    if m is None:
        raise RemoteProtocolError(f"not a URI: {text[:60]!r}")
    scheme = text[: m.end() - 1]
    rest = text[m.end() :]
    lowered = scheme.lower()
    if lowered in ("sip", "sips"):
        return _parse_sip(lowered, rest)
    if lowered == "tel":
        return _parse_tel(rest)
    return _parse_absolute(scheme, rest)
