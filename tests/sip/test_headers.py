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
