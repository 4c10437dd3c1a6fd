"""Address header values: From, To, Contact, Route, Record-Route, Reply-To...

RFC 3261 §20.10 and §25.1::

    name-addr    = [ display-name ] LAQUOT addr-spec RAQUOT
    addr-spec    = SIP-URI / SIPS-URI / absoluteURI
    display-name = *(token LWS) / quoted-string
    LAQUOT       = SWS "<"
    RAQUOT       = ">" SWS

followed by ``*( SEMI generic-param )`` header parameters (tag, expires, q,
received...). In the addr-spec form (no ``<>``) everything after the first
``;`` is a *header* parameter, which is why a URI containing ``,``, ``?`` or
``;`` must use the name-addr form (§20.10, RFC 4475 §3.1.2.13, §3.3.12).

Two liberties, both asked for by RFC 4475: a token display name may be
followed directly by ``<`` with no LWS (§3.1.1.6, an ABNF bug in RFC 3261),
and runs of LWS between display-name tokens are kept as one space.

Two kinds of result: :func:`parse_name_addr` returns a fresh, mutable
:class:`NameAddr` for a caller to change; :func:`peek_name_addr` (and the
message views, ``request.from_addr``...) return a :class:`SharedNameAddr`,
read-only because one parse serves every message that carries the value.
``.copy()`` of either is a fresh mutable one.
"""

from __future__ import annotations

import re
from dataclasses import FrozenInstanceError, dataclass, field
from typing import TypeAlias

from .errors import LocalProtocolError, RemoteProtocolError
from .grammar import QUOTED_STRING, is_token, percent_encode, unquote
from .memo import memoised
from .params import Params, parse_params
from .uri import URI, USER_SAFE, SipURI, parse_uri

_QUOTED_RE = re.compile(QUOTED_STRING)
_LWS_SPLIT_RE = re.compile(r"[ \t]+")
_NEEDS_ANGLE_RE = re.compile(r"[;,?]")


def _quote_display(name: str) -> str:
    # quoted-string = DQUOTE *(qdtext / quoted-pair ) DQUOTE
    # qdtext excludes controls, so they go out as quoted-pairs; CR and LF
    # cannot be quoted at all and would split the header (§25.1).
    out = ['"']
    for ch in name:
        if ch in "\r\n":
            raise LocalProtocolError("display name must not contain CR or LF")
        if ch in '"\\' or (ch < " " and ch != "\t") or ch == "\x7f":
            out.append("\\")
        out.append(ch)
    out.append('"')
    return "".join(out)


@dataclass(kw_only=True, eq=False)
class NameAddr:
    """One address: optional display name, a URI and header parameters.

    ``display_name`` is the unquoted text (None when absent, ``""`` for an
    empty quoted string). ``params`` are header parameters with raw values.
    ``angle`` records whether the value used ``<>``; it affects only how
    ``str()`` renders and is ignored by ``==``. ``str()`` uses the
    ``"Display" <uri>;params`` form whenever there is a display name or the
    URI contains ``;``, ``,`` or ``?``, so the result always re-parses to an
    equal value. The URI is immutable (change it with ``addr.uri =
    addr.uri.copy(...)``); the rest can be changed unless the address is a
    shared one (:meth:`frozen`).
    """

    uri: URI
    display_name: str | None = None
    params: Params = field(default_factory=Params)
    angle: bool = True

    def __post_init__(self) -> None:
        if self.params.uri:
            self.params = Params(self.params.items())

    def __eq__(self, other: object) -> bool:
        # A shared address equals a fresh one with the same value; ``angle``
        # is only how it was written.
        if not isinstance(other, NameAddr):
            return NotImplemented
        return (
            self.uri == other.uri
            and self.display_name == other.display_name
            and self.params == other.params
        )

    # Defining __eq__ leaves a mutable NameAddr unhashable; SharedNameAddr hashes.

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 §19.3), or None."""
        return self.params.get("tag")

    @tag.setter
    def tag(self, value: str | None) -> None:
        if value is None:
            self.params.remove("tag")
        else:
            self.params.set("tag", value)

    @property
    def aor(self) -> str | None:
        """:func:`aor_of` the URI: the canonical address of record, or None when
        the URI names no SIP user."""
        return _aor_or_none(self.uri)

    def copy(self) -> NameAddr:
        """A fresh mutable copy (even of a shared address): change it freely."""
        return NameAddr(
            uri=self.uri,  # immutable, so shared
            display_name=self.display_name,
            params=self.params.copy(),
            angle=self.angle,
        )

    def frozen(self) -> SharedNameAddr:
        """This address, read-only: ``self`` if it is shared already, else a shared copy."""
        if isinstance(self, SharedNameAddr):
            return self
        return _shared(self.uri, self.display_name, self.params.frozen(), self.angle)

    def __str__(self) -> str:
        uri_text = str(self.uri)
        if self.display_name is None:
            if not self.angle and _NEEDS_ANGLE_RE.search(uri_text) is None:
                return f"{uri_text}{self.params}"
            return f"<{uri_text}>{self.params}"
        return f"{_quote_display(self.display_name)} <{uri_text}>{self.params}"


_UNKNOWN = object()


class SharedNameAddr(NameAddr):
    """A read-only :class:`NameAddr`: what the memos and message views share.

    One parse of a From, To or Contact value serves every message that
    carries it, so nothing may change it: assigning an attribute or changing
    its parameters raises :class:`~dataclasses.FrozenInstanceError`. Use
    ``.copy()`` for an address to change. It is hashable, and its :attr:`tag`
    and :attr:`aor` are computed once.
    """

    def __init__(
        self,
        *,
        uri: URI,
        display_name: str | None = None,
        params: Params | None = None,
        angle: bool = True,
    ) -> None:
        # For dataclasses.replace() and direct construction; the parser and
        # frozen() use _shared(). The instance dict is not guarded by __setattr__.
        given = Params() if params is None else params
        given = Params(given.items()) if given.uri else given
        fields = self.__dict__
        fields["uri"] = uri
        fields["display_name"] = display_name
        fields["params"] = given.frozen()
        fields["angle"] = angle

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign {name!r}: this address is shared; copy() it")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete {name!r}: this address is shared; copy() it")

    def __hash__(self) -> int:
        return hash((self.uri, self.display_name, self.params))

    @property
    def tag(self) -> str | None:
        # Cached in the instance dict (which __setattr__ does not guard): the
        # tags of From and To are read several times per message.
        cache = self.__dict__
        tag = cache.get("_tag", _UNKNOWN)
        if tag is _UNKNOWN:
            tag = cache["_tag"] = self.params.get("tag")
        return tag  # type: ignore[no-any-return]

    @tag.setter
    def tag(self, value: str | None) -> None:
        raise FrozenInstanceError("cannot assign 'tag': this address is shared; copy() it")

    @property
    def aor(self) -> str | None:
        # Cached like the tag: a dialog's From and To are asked for their AOR
        # on every message.
        cache = self.__dict__
        aor = cache.get("_aor", _UNKNOWN)
        if aor is _UNKNOWN:
            aor = cache["_aor"] = _aor_or_none(self.uri)
        return aor  # type: ignore[no-any-return]


def _shared(uri: URI, display_name: str | None, params: Params, angle: bool) -> SharedNameAddr:
    # Built without __init__, which SharedNameAddr's __setattr__ would refuse
    # (and which would only repeat what the parser checked). ``params`` must
    # be frozen header parameters; everything else held is immutable.
    shared = object.__new__(SharedNameAddr)
    fields = shared.__dict__
    fields["uri"] = uri
    fields["display_name"] = display_name
    fields["params"] = params
    fields["angle"] = angle
    return shared


def _skip_sws(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in " \t":
        pos += 1
    return pos


def _token_display(text: str) -> str | None:
    # display-name = *(token LWS): anything else (a comma, say) must be quoted
    # (RFC 4475 §3.1.2.15).
    words = [w for w in _LWS_SPLIT_RE.split(text) if w]
    if not words:
        return None
    for word in words:
        if not is_token(word):
            raise RemoteProtocolError(
                "display name with non-token characters must be a quoted string"
            )
    return " ".join(words)


_Parts: TypeAlias = tuple[URI, str | None, Params, bool]
"""What an address value is made of: URI, display name, header parameters, angle."""


def _finish_angle(text: str, lt: int, display: str | None) -> _Parts:
    gt = text.find(">", lt + 1)
    if gt < 0:
        raise RemoteProtocolError("'<' without matching '>' in address")
    uri_text = text[lt + 1 : gt]
    if " " in uri_text or "\t" in uri_text:
        # RFC 4475 §3.1.2.14: no LWS is allowed inside <addr-spec>.
        raise RemoteProtocolError("whitespace inside <URI> is not allowed")
    uri = parse_uri(uri_text)
    params = parse_params(text[gt + 1 :], uri=False)
    return uri, display, params, True


def _parse_addr_spec(text: str) -> _Parts:
    uri_text, semi, param_text = text.partition(";")
    uri_text = uri_text.rstrip(" \t")
    if "?" in uri_text or "," in uri_text:
        raise RemoteProtocolError("a URI with '?' or ',' must use name-addr form (<URI>)")
    uri = parse_uri(uri_text)
    params = parse_params(semi + param_text, uri=False)
    return uri, None, params, False


def parse_name_addr(value: str, *, angle_required: bool = False) -> NameAddr:
    """Parse one address value in name-addr or addr-spec form, with parameters.

    ``value`` is one element of the header (split list headers at commas
    outside quotes and ``<>`` first) with folding already replaced by SP.
    Pass ``angle_required=True`` where the grammar allows only name-addr
    (Record-Route and Route, RFC 3261 §20.30, §20.34; Path, RFC 3327). Raises
    :class:`RemoteProtocolError` (400) on any syntax error.
    """
    uri, display_name, params, angle = _parse(value, angle_required)
    return NameAddr(uri=uri, display_name=display_name, params=params, angle=angle)


def _parse(value: str, angle_required: bool) -> _Parts:
    text = value.strip(" \t")
    if not text:
        raise RemoteProtocolError("empty address")
    if text[0] == '"':
        m = _QUOTED_RE.match(text)
        if m is None:
            raise RemoteProtocolError("unterminated quoted string in display name")
        pos = _skip_sws(text, m.end())
        if pos >= len(text) or text[pos] != "<":
            raise RemoteProtocolError("a quoted display name must be followed by <URI>")
        return _finish_angle(text, pos, unquote(m.group()))
    # A '<' belongs to the name-addr form only if it precedes any ';' or '"':
    # after those it can only sit inside a quoted header parameter value.
    lt = text.find("<")
    stops = [i for i in (text.find(";"), text.find('"')) if i >= 0]
    if lt >= 0 and (not stops or lt < min(stops)):
        return _finish_angle(text, lt, _token_display(text[:lt]))
    if angle_required:
        raise RemoteProtocolError("address must use name-addr form (<URI>)")
    return _parse_addr_spec(text)


def parse_contact_value(value: str) -> NameAddr | None:
    """Parse one Contact value (RFC 3261 §20.10); None means ``*``.

    The star is legal only alone, in a REGISTER with ``Expires: 0``
    (§10.2.2); checking that is the caller's job.
    """
    return None if _is_star(value) else parse_name_addr(value)


def peek_contact_value(value: str) -> SharedNameAddr | None:
    """:func:`parse_contact_value` through the shared memo (see :func:`peek_name_addr`)."""
    return None if _is_star(value) else peek_name_addr(value)


def _is_star(value: str) -> bool:
    return value.strip(" \t") == "*"


MAX_SHARED_ADDRESSES = 4096
"""Address values whose parse :func:`peek_name_addr` remembers (the memo is
emptied when full; values come from the network)."""


@memoised(MAX_SHARED_ADDRESSES)
def peek_name_addr(value: str) -> SharedNameAddr:
    """:func:`parse_name_addr` for readers: the result is shared and read-only.

    A dialog's From and To arrive in every one of its messages and are read
    several times per message (routing, transaction matching, loop checks,
    call records); this parses each distinct value once. Changing the result
    raises :class:`~dataclasses.FrozenInstanceError`: use
    :func:`parse_name_addr` (or ``.copy()``) for an address to change.
    """
    uri, display_name, params, angle = _parse(value, False)
    # The fresh parse is ours alone, so its params are frozen in place.
    return _shared(uri, display_name, params._freeze(), angle)


def aor_of(uri: URI) -> str:
    """The canonical address of record of ``uri``: ``sip:user@domain``.

    RFC 3261 §10.3 step 5: the user is unescaped (and re-escaped canonically),
    the domain lowercased (a trailing dot dropped), and the password, port,
    parameters and headers dropped. ``sips:`` maps to ``sip:``: one user has
    one set of bindings, and the scheme only says how a request must travel.
    This is the one canonical form: the registrar's binding keys, presence,
    archiving and call records all use it. Raises ValueError for a URI that
    is not SIP or has no user part; callers that would rather have None use
    :func:`aor_from_header` on a header value.
    """
    if not isinstance(uri, SipURI) or uri.user is None:
        raise ValueError(f"not a SIP address of record: {uri}")
    # What str(SipURI(user=..., host=...)) renders, without building one: the
    # parts come from a URI that was checked when it was made.
    return f"sip:{percent_encode(uri.user, USER_SAFE)}@{uri.host.lower().rstrip('.')}"


def _aor_or_none(uri: URI) -> str | None:
    if not isinstance(uri, SipURI) or uri.user is None:
        return None
    return aor_of(uri)


def aor_from_header(value: str | None) -> str | None:
    """:func:`aor_of` the URI in a From/To value, or None.

    None when the value is absent, malformed, or names no SIP user. The
    result is remembered with the shared parse of the value (a dialog's From
    and To repeat); a message's ``from_aor`` and ``to_aor`` give the same.
    """
    if not value:
        return None
    try:
        return peek_name_addr(value).aor
    except RemoteProtocolError:
        return None
