"""Parameter lists: ``;name=value;flag`` on header values and on URIs.

Two grammars share one container:

Header parameters (RFC 3261 §7.3.1, §25.1)::

    *( SEMI generic-param )
    SEMI          = SWS ";" SWS
    EQUAL         = SWS "=" SWS
    generic-param = token [ EQUAL gen-value ]
    gen-value     = token / host / quoted-string

URI parameters (RFC 3261 §19.1.1, §25.1)::

    uri-parameters   = *( ";" uri-parameter )
    other-param      = pname [ "=" pvalue ]
    pname            = 1*paramchar
    pvalue           = 1*paramchar
    paramchar        = param-unreserved / unreserved / escaped
    param-unreserved = "[" / "]" / "/" / ":" / "&" / "+" / "$"

Header parameter values are stored *raw*: a quoted-string keeps its quotes
and quoted-pairs so that it renders back byte for byte; use
:meth:`Params.unquoted` for the text inside. URI parameter names and values
are percent-decoded exactly once (§19.1.2) and re-escaped on output.

A parameter list always starts with its first ``;``: :func:`parse_params`
takes the text from the first ``;`` on (or the empty string for no
parameters), exactly the ``*( SEMI param )`` production.

A :class:`Params` is mutable until it is frozen (:meth:`Params.frozen`).
URIs hold frozen ones, and so do the addresses and Vias that the memos and
message views share between messages: nobody can change a list that another
message reads. ``copy()`` always gives a fresh mutable list to change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import FrozenInstanceError

from .errors import LocalProtocolError, RemoteProtocolError
from .grammar import QUOTED_STRING, TOKEN, percent_decode, percent_encode, unquote
from .limits import MAX_PARAMS

#   token / host: host adds ":" "[" "]" for IPv6 (a Via received= may even
#   carry a bare IPv6address, RFC 3261 §20.42 and RFC 5118 §4.5).
_HEADER_VALUE = r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+"
_HEADER_VALUE_RE = re.compile(_HEADER_VALUE)
_QUOTED_RE = re.compile(QUOTED_STRING)
_TOKEN_RE = re.compile(TOKEN)

#   paramchar = param-unreserved / unreserved / escaped
#   unreserved = alphanum / mark ; mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
PARAM_SAFE = "-_.!~*'()[]/:&+$"
"""Characters besides alphanumerics that a URI parameter carries unescaped."""
_PARAMCHARS_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+")


class Params:
    """An ordered list of ``(name, value)`` parameters; ``value`` None is a flag.

    Lookup is case-insensitive on the name; the spelling is kept for output.
    ``uri`` selects the grammar: for URI parameters names and values hold the
    decoded text and are escaped by :meth:`__str__`; for header parameters
    values hold the raw text (a quoted-string keeps its quotes). Setters
    check that what they store will render as valid SIP and raise
    :class:`LocalProtocolError` otherwise, so a Params can never be used to
    inject a ``;`` or a line break into a message.

    A frozen Params (see :meth:`frozen`) refuses :meth:`set` and :meth:`remove`
    with :class:`~dataclasses.FrozenInstanceError` and is hashable.
    """

    __slots__ = ("_frozen", "_items", "_uri")

    def __init__(self, items: Iterable[tuple[str, str | None]] = (), *, uri: bool = False) -> None:
        self._uri = uri
        self._frozen = False
        self._items: list[tuple[str, str | None]] = []
        for name, value in items:
            self.set(name, value)

    @property
    def uri(self) -> bool:
        """True for URI parameters (decoded, escaped on output), False for header ones."""
        return self._uri

    @property
    def is_frozen(self) -> bool:
        """True once :meth:`frozen` made this list read-only."""
        return self._frozen

    # --- reading -----------------------------------------------------------

    def _find(self, name: str) -> int:
        key = name.lower()
        for i, (n, _) in enumerate(self._items):
            if n.lower() == key:
                return i
        return -1

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of ``name``; ``default`` when absent; None for a flag.

        Use ``name in params`` to tell a flag from an absent parameter.
        """
        i = self._find(name)
        return default if i < 0 else self._items[i][1]

    def __getitem__(self, name: str) -> str | None:
        i = self._find(name)
        if i < 0:
            raise KeyError(name)
        return self._items[i][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name) >= 0

    def unquoted(self, name: str) -> str | None:
        """The value of a header parameter with any quoted-string resolved.

        ``None`` when the parameter is absent or a flag.
        """
        value = self.get(name)
        if value is not None and value.startswith('"'):
            return unquote(value)
        return value

    def items(self) -> list[tuple[str, str | None]]:
        """A copy of the ``(name, value)`` pairs, in order."""
        return list(self._items)

    def names(self) -> list[str]:
        return [n for n, _ in self._items]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    # --- writing -----------------------------------------------------------

    def set(self, name: str, value: str | None = None) -> None:
        """Set ``name`` (replacing it in place if present, else appending).

        For header parameters ``name`` must be a token and ``value`` a token,
        host or complete quoted-string; for URI parameters any non-empty text
        is allowed (it is escaped on output).
        """
        if self._frozen:
            raise FrozenInstanceError(
                f"cannot set {name!r}: these parameters are shared; copy() them"
            )
        self._check(name, value)
        i = self._find(name)
        if i < 0:
            self._items.append((name, value))
        else:
            self._items[i] = (name, value)

    def remove(self, name: str) -> None:
        """Remove ``name`` if present (absent is not an error)."""
        if self._frozen:
            raise FrozenInstanceError(
                f"cannot remove {name!r}: these parameters are shared; copy() them"
            )
        i = self._find(name)
        if i >= 0:
            del self._items[i]

    def copy(self) -> Params:
        """A mutable copy, frozen or not: change it without touching this one."""
        clone = Params(uri=self._uri)
        clone._items = list(self._items)
        return clone

    def frozen(self) -> Params:
        """This list, read-only: ``self`` if it is frozen already, else a frozen copy."""
        if self._frozen:
            return self
        return self.copy()._freeze()

    def _freeze(self) -> Params:
        # In place, for a list nobody else holds yet (a fresh parse).
        self._frozen = True
        return self

    def _check(self, name: str, value: str | None) -> None:
        if self._uri:
            if not name or value == "":
                raise LocalProtocolError("URI parameter name and value must be non-empty")
            return
        if _TOKEN_RE.fullmatch(name) is None:
            raise LocalProtocolError(f"header parameter name is not a token: {name!r}")
        if value is not None and not _is_header_value(value):
            raise LocalProtocolError(f"header parameter {name} has an invalid value {value!r}")

    # --- output ------------------------------------------------------------

    def __str__(self) -> str:
        if not self._uri:
            return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in self._items)
        out: list[str] = []
        for n, v in self._items:
            out.append(";" + percent_encode(n, PARAM_SAFE))
            if v is not None:
                out.append("=" + percent_encode(v, PARAM_SAFE))
        return "".join(out)

    def __repr__(self) -> str:
        return f"Params({self._items!r}, uri={self._uri})"

    def __eq__(self, other: object) -> bool:
        """Order-sensitive; names compared case-insensitively, values exactly."""
        if not isinstance(other, Params):
            return NotImplemented
        return len(self._items) == len(other._items) and all(
            a.lower() == b.lower() and av == bv
            for (a, av), (b, bv) in zip(self._items, other._items, strict=True)
        )

    def __hash__(self) -> int:
        """Frozen lists hash like ``==`` compares; a mutable one is unhashable."""
        if not self._frozen:
            raise TypeError("unhashable type: a mutable Params (use frozen())")
        return hash(tuple((n.lower(), v) for n, v in self._items))


def _is_header_value(value: str) -> bool:
    if value.startswith('"'):
        return _QUOTED_RE.fullmatch(value) is not None
    return _HEADER_VALUE_RE.fullmatch(value) is not None


def parse_params(text: str, *, uri: bool) -> Params:
    """Parse a parameter list that begins with its first ``;``.

    ``text`` is the empty string (no parameters) or starts with ``;``; for
    header parameters (``uri=False``) LWS is allowed around ``;`` and ``=``
    and at either end. Raises :class:`RemoteProtocolError` (400) on an empty
    name or value, a stray ``;``, a duplicate name, more than
    :data:`~conclave.sip.limits.MAX_PARAMS` parameters, or any character the
    grammar does not allow.
    """
    return _parse_uri_params(text) if uri else _parse_header_params(text)


def _add(params: Params, name: str, value: str | None) -> None:
    if len(params) >= MAX_PARAMS:
        raise RemoteProtocolError(f"more than {MAX_PARAMS} parameters")
    if name in params:
        # Two values for one name (two tags, two branches) make the value
        # ambiguous, and elements may disagree on which one counts.
        raise RemoteProtocolError(f"duplicate parameter {name[:40]!r}")
    params._items.append((name, value))


def _parse_uri_params(text: str) -> Params:
    params = Params(uri=True)
    if not text:
        return params
    if text[0] != ";":
        raise RemoteProtocolError("URI parameters must start with ';'")
    for piece in text[1:].split(";"):
        name, eq, value = piece.partition("=")
        if not name:
            raise RemoteProtocolError("empty URI parameter name")
        if _PARAMCHARS_RE.fullmatch(name) is None:
            raise RemoteProtocolError(f"invalid URI parameter name {name[:40]!r}")
        if eq and _PARAMCHARS_RE.fullmatch(value) is None:
            raise RemoteProtocolError(f"invalid value for URI parameter {name[:40]!r}")
        _add(params, percent_decode(name), percent_decode(value) if eq else None)
    return params


def _skip_sws(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in " \t":
        pos += 1
    return pos


_SIMPLE_HEADER_PARAMS_RE = re.compile(rf"(?:;{TOKEN}(?:={_HEADER_VALUE})?)*")
"""A parameter list with no LWS and no quoted-string: what nearly every peer
sends. Neither ``;`` nor ``=`` can occur inside a name or value here, so the
list splits without a scanner."""


def _parse_header_params(text: str) -> Params:
    if _SIMPLE_HEADER_PARAMS_RE.fullmatch(text) is not None:
        simple = Params()
        if text:
            for piece in text[1:].split(";"):
                key, eq, raw = piece.partition("=")
                _add(simple, key, raw if eq else None)
        return simple
    params = Params()
    n = len(text)
    pos = _skip_sws(text, 0)
    while pos < n:
        if text[pos] != ";":
            raise RemoteProtocolError(f"expected ';' before parameter at {text[pos : pos + 20]!r}")
        pos = _skip_sws(text, pos + 1)
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise RemoteProtocolError("empty or invalid parameter name")
        name = m.group()
        pos = _skip_sws(text, m.end())
        value: str | None = None
        if pos < n and text[pos] == "=":
            pos = _skip_sws(text, pos + 1)
            if pos < n and text[pos] == '"':
                m = _QUOTED_RE.match(text, pos)
                if m is None:
                    raise RemoteProtocolError(f"unterminated quoted string in {name[:40]!r}")
            else:
                m = _HEADER_VALUE_RE.match(text, pos)
                if m is None:
                    raise RemoteProtocolError(f"empty or invalid value for {name[:40]!r}")
            value = m.group()
            pos = _skip_sws(text, m.end())
        _add(params, name, value)
    return params
