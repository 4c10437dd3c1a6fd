from __future__ import annotations

import pytest

from conclave.sip.headers import COMPACT_FORMS, Headers, canonical_name


@pytest.mark.parametrize(
    ("compact", "full"),
    [
        ("i", "Call-ID"),
        ("m", "Contact"),
        ("e", "Content-Encoding"),
        ("l", "Content-Length"),
        ("c", "Content-Type"),
        ("f", "From"),
        ("s", "Subject"),
        ("k", "Supported"),
        ("t", "To"),
        ("v", "Via"),
        ("o", "Event"),
        ("u", "Allow-Events"),
    ],
)
def test_compact_forms(compact: str, full: str) -> None:
    assert canonical_name(compact) == full
    assert canonical_name(compact.upper()) == full
    assert COMPACT_FORMS[compact] == full


def test_canonical_capitalisation_and_unknown_preserved() -> None:
    assert canonical_name("call-id") == "Call-ID"
    assert canonical_name("CSEQ") == "CSeq"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("X-Custom-Thing") == "X-Custom-Thing"
    assert canonical_name("x-custom-thing") == "x-custom-thing"


def test_lookup_is_case_insensitive_and_ordered() -> None:
    h = Headers([("v", "a"), ("To", "t"), ("VIA", "b")])
    assert h.get_all("via") == ["a", "b"]
    assert h.get("TO") == "t"
    assert "Via" in h and "v" in h and "Route" not in h
    assert [n for n, _ in h] == ["Via", "To", "Via"]


def test_prepend_inserts_before_first_occurrence() -> None:
    h = Headers([("To", "t"), ("Via", "a")])
    h.prepend("Via", "z")
    assert list(h) == [("To", "t"), ("Via", "z"), ("Via", "a")]
    h.prepend("Record-Route", "<sip:p>")
    assert next(iter(h)) == ("Record-Route", "<sip:p>")


def test_set_remove_pop() -> None:
    h = Headers([("Expires", "1"), ("To", "t"), ("Expires", "2")])
    h.set("expires", "3")
    assert list(h) == [("Expires", "3"), ("To", "t")]
    assert h.pop_first("Expires") == "3"
    assert h.pop_first("Expires") is None
    assert h.remove("to") == 1
    assert len(h) == 0


def test_equality_ignores_name_case_but_not_order() -> None:
    assert Headers([("to", "a")]) == Headers([("To", "a")])
    assert Headers([("To", "a"), ("From", "b")]) != Headers([("From", "b"), ("To", "a")])
    copy = Headers([("To", "a")]).copy()
    copy.add("From", "b")
    assert len(copy) == 2


# --- typed views kept with the fields -----------------------------------------------


class _Counting:
    """A view that counts how often it is computed: the first value of its header."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def __call__(self, headers: Headers) -> str | None:
        self.calls += 1
        return headers.get(self.name)


def test_a_view_is_computed_once_until_its_header_changes() -> None:
    headers = Headers([("Via", "a"), ("To", "t")])
    via, to = _Counting("Via"), _Counting("To")
    assert headers.cached("via", via) == "a"
    assert headers.cached("via", via) == "a"
    assert headers.cached("to", to) == "t"
    assert (via.calls, to.calls) == (1, 1)
    headers.prepend("v", "b")  # any spelling of the name
    assert headers.cached("via", via) == "b"
    assert headers.cached("to", to) == "t"  # another header's view is kept
    assert (via.calls, to.calls) == (2, 1)


@pytest.mark.parametrize(
    "change",
    [
        lambda h: h.add("Via", "z"),
        lambda h: h.prepend("Via", "z"),
        lambda h: h.set("Via", "z"),
        lambda h: h.replace_first("VIA", "z"),
        lambda h: h.remove("Via"),
        lambda h: h.pop_first("Via"),
    ],
)
def test_every_change_to_a_header_drops_its_view(change: object) -> None:
    headers = Headers([("Via", "a"), ("Via", "b"), ("To", "t")])
    via, to = _Counting("Via"), _Counting("To")
    headers.cached("via", via)
    headers.cached("to", to)
    change(headers)  # type: ignore[operator]
    assert headers.cached("via", via) == headers.get("Via")
    assert via.calls == 2
    headers.cached("to", to)
    assert to.calls == 1


def test_changes_to_absent_or_other_headers_keep_the_view() -> None:
    headers = Headers([("Via", "a")])
    via = _Counting("Via")
    headers.cached("via", via)
    headers.remove("Route")  # nothing removed
    headers.pop_first("Route")
    headers.add("Max-Forwards", "70")
    headers.set("To", "t")
    assert headers.cached("via", via) == "a" and via.calls == 1


def test_copies_keep_the_views_and_change_independently() -> None:
    headers = Headers([("Via", "a")])
    via = _Counting("Via")
    headers.cached("via", via)
    clone = headers.copy()
    assert clone.cached("via", via) == "a" and via.calls == 1  # came along
    clone.prepend("Via", "b")
    assert clone.cached("via", via) == "b"
    assert headers.cached("via", via) == "a"
    assert clone != headers and via.calls == 2


def test_errors_are_not_kept() -> None:
    headers = Headers()
    calls: list[int] = []

    def failing(h: Headers) -> str:
        calls.append(1)
        raise ValueError("no")

    for _ in range(2):
        with pytest.raises(ValueError):
            headers.cached("via", failing)
    assert len(calls) == 2


def test_views_do_not_affect_equality() -> None:
    a, b = Headers([("Via", "x")]), Headers([("Via", "x")])
    a.cached("via", _Counting("Via"))
    assert a == b
