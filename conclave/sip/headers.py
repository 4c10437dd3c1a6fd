"""Ordered, multi-valued header fields with case-insensitive names.

Names are stored in canonical form: compact forms (RFC 3261 §7.3.3 and the
event-framework RFCs) are expanded and well-known names get their usual
capitalisation, so ``v``, ``VIA`` and ``Via`` are one header. Unknown header
names are preserved exactly as received.

Headers whose grammar is a comma-separated list (Via, Contact, Route, ...)
hold one entry per value: the parser splits ``Via: a, b`` into two entries
(RFC 3261 §7.3.1 makes the two forms equivalent). Every other header holds
its field value as received, with folding already replaced by a single space.

Beside the fields, a :class:`Headers` keeps the typed views computed from
them (:meth:`Headers.cached`; the message module defines them: the top Via,
From, To, CSeq...), so each is parsed at most once per message. Every method
that changes the fields of a name drops that name's view.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from .memo import memoised

V = TypeVar("V")
_MISSING = object()

# RFC 3261 §7.3.3 compact forms, plus those of RFC 3265/6665 (o, u), RFC 3515
# (r), RFC 3892 (b), RFC 4028 (x), RFC 3841 (a, j, d), RFC 4474 (y, n).
COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
    "n": "Identity-Info",
}

_WELL_KNOWN = [
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Max-Forwards",
    "Min-Expires",
    "Min-SE",
    "MIME-Version",
    "Organization",
    "Path",
    "Priority",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Session-Expires",
    "SIP-ETag",
    "SIP-If-Match",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
    "Flow-Timer",
    "Sec-WebSocket-Protocol",
]
_CANONICAL: dict[str, str] = {name.lower(): name for name in _WELL_KNOWN}
_CANONICAL.update(COMPACT_FORMS)

LIST_HEADERS: frozenset[str] = frozenset(
    {
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Call-Info",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Error-Info",
        "In-Reply-To",
        "Path",
        "Proxy-Require",
        "Record-Route",
        "Require",
        "Route",
        "Service-Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
    }
)
"""Headers whose ABNF is ``#element``: a comma list that may also be written
as several header fields (RFC 3261 §7.3.1)."""

SINGLE_HEADERS: frozenset[str] = frozenset(
    {"Call-ID", "To", "From", "CSeq", "Max-Forwards", "Content-Length", "Content-Type"}
)
"""Headers that must appear at most once; a second one is a 400 (RFC 4475
§3.3.8, §3.3.9)."""

EMPTY_LIST_ALLOWED: frozenset[str] = frozenset(
    {"Accept", "Accept-Encoding", "Accept-Language", "Allow", "Supported", "Allow-Events"}
)
"""List headers whose ABNF allows an empty field value (``[ element ... ]``)."""


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name (compact forms expanded)."""
    return _CANONICAL.get(name.lower(), name)


MAX_NAME_MEMO = 4096
"""Header name spellings remembered by :func:`name_and_key`. Names arrive
from the network, so the memo is bounded: inventing names only costs an
attacker the slow path."""


@memoised(MAX_NAME_MEMO)
def name_and_key(name: str) -> tuple[str, str]:
    """``name``'s canonical spelling and its lookup key (that, lowercased)."""
    canon = canonical_name(name)
    return canon, canon.lower()


_NAME_MEMO = name_and_key.memo
"""The memo behind :func:`name_and_key`, read inline by :meth:`Headers.get`
(the lookup every message makes dozens of times)."""


def _key(name: str) -> str:
    return name_and_key(name)[1]


class Headers:
    """An ordered list of ``(name, value)`` with case-insensitive lookups.

    Beside the pairs it keeps each name's lookup key (canonical, lowercased)
    in a parallel list, so that lookups are C-level list scans: every message
    is looked up a few dozen times on its way through the server. It also
    keeps the typed views of its fields (:meth:`cached`).
    """

    __slots__ = ("_items", "_keys", "_views")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        self._keys: list[str] = []
        self._views: dict[str, object] = {}
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _from_lists(
        cls, items: list[tuple[str, str]], keys: list[str], views: dict[str, object]
    ) -> Headers:
        # For the parser, which has built both lists (canonical names, their
        # keys) in one pass, and the views of what it checked on the way.
        headers = cls.__new__(cls)
        headers._items = items
        headers._keys = keys
        headers._views = views
        return headers

    # -- typed views ---------------------------------------------------
    def _get_view(self, key: str) -> object:
        # The view of ``key`` if it has been computed, else None.
        return self._views.get(key)

    def _set_view(self, key: str, value: object) -> None:
        # For conclave.sip's own modules that have just written the fields of
        # ``key`` from values they hold parsed (replace_top_via, make_response):
        # ``value`` must be what the view would compute from the fields now.
        self._views[key] = value

    def cached(self, key: str, compute: Callable[[Headers], V]) -> V:
        """The typed view of the fields whose lookup key is ``key``, computed once.

        ``key`` is a header's canonical name lowercased (``"via"``, ``"from"``)
        and names its one view: ``compute(self)`` reads those fields and
        returns an immutable value (it is kept, and copied with the headers).
        It is called again only after a method of this object changed a field
        of that name. An error it raises is not kept: it is raised again on
        the next call.
        """
        views = self._views
        value = views.get(key, _MISSING)
        if value is _MISSING:
            value = views[key] = compute(self)
        return value  # type: ignore[return-value]

    # -- reading -------------------------------------------------------
    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        key = (_NAME_MEMO.get(name) or name_and_key(name))[1]
        keys = self._keys
        if key not in keys:
            return default
        return self._items[keys.index(key)][1]

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        key = (_NAME_MEMO.get(name) or name_and_key(name))[1]
        keys = self._keys
        count = keys.count(key)
        if not count:
            return []
        first = keys.index(key)
        if count == 1:
            return [self._items[first][1]]
        if keys[first : first + count].count(key) == count:
            # The fields of one name are nearly always together (a list
            # header's values, the Vias at the top): one slice, no scan.
            return [item[1] for item in self._items[first : first + count]]
        return [item[1] for k, item in zip(keys, self._items, strict=True) if k == key]

    def count(self, name: str) -> int:
        return self._keys.count(_key(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._keys

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._keys == other._keys and all(
            a[1] == b[1] for a, b in zip(self._items, other._items, strict=True)
        )

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def copy(self) -> Headers:
        """An independent copy; the typed views come along (they are immutable)."""
        new = Headers.__new__(Headers)
        new._items = list(self._items)
        new._keys = list(self._keys)
        new._views = self._views.copy()
        return new

    # -- writing -------------------------------------------------------
    def add(self, name: str, value: str) -> None:
        """Append a header field at the end."""
        canon, key = name_and_key(name)
        self._items.append((canon, value))
        self._keys.append(key)
        self._views.pop(key, None)

    def prepend(self, name: str, value: str) -> None:
        """Insert ``name`` before its first existing occurrence (or at the top).

        This is how a proxy pushes its Via and Record-Route (RFC 3261 §16.6).
        """
        key = _key(name)
        i = self._keys.index(key) if key in self._keys else 0
        self._items.insert(i, (canonical_name(name), value))
        self._keys.insert(i, key)
        self._views.pop(key, None)

    def set(self, name: str, value: str) -> None:
        """Replace every occurrence of ``name`` with one, where the first was."""
        key = _key(name)
        if key not in self._keys:
            self.add(name, value)
            return
        self._views.pop(key, None)
        first = self._keys.index(key)
        self._items[first] = (canonical_name(name), value)
        for i in range(len(self._keys) - 1, first, -1):
            if self._keys[i] == key:
                del self._keys[i]
                del self._items[i]

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first value of ``name`` in place (or append if absent)."""
        key = _key(name)
        if key not in self._keys:
            self.add(name, value)
            return
        self._views.pop(key, None)
        i = self._keys.index(key)
        self._items[i] = (self._items[i][0], value)

    def remove(self, name: str) -> int:
        """Remove every occurrence of ``name``; return how many there were."""
        key = _key(name)
        before = len(self._items)
        if key not in self._keys:
            return 0
        self._views.pop(key, None)
        kept = [(k, item) for k, item in zip(self._keys, self._items, strict=True) if k != key]
        self._keys = [k for k, _ in kept]
        self._items = [item for _, item in kept]
        return before - len(self._items)

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first value of ``name`` (a proxy's own Via/Route)."""
        key = _key(name)
        if key not in self._keys:
            return None
        self._views.pop(key, None)
        i = self._keys.index(key)
        del self._keys[i]
        return self._items.pop(i)[1]
