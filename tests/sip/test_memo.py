"""The bounded memos behind the shared parses (conclave.sip.memo), and the
rule that what they share is immutable."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import FrozenInstanceError

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conclave.sip.address import (
    NameAddr,
    SharedNameAddr,
    parse_contact_value,
    parse_name_addr,
    peek_contact_value,
    peek_name_addr,
)
from conclave.sip.errors import RemoteProtocolError
from conclave.sip.fields import SharedVia, Via, parse_cseq, parse_via, peek_via
from conclave.sip.memo import MAX_MEMO_TEXT, memoised
from conclave.sip.uri import parse_uri


def test_results_are_remembered_and_shared() -> None:
    calls: list[str] = []

    @memoised(8)
    def length(text: str) -> int:
        calls.append(text)
        return len(text)

    assert [length("ab"), length("ab"), length("abc")] == [2, 2, 3]
    assert calls == ["ab", "abc"]


def test_memo_is_emptied_when_full() -> None:
    calls: list[str] = []

    @memoised(2)
    def echo(text: str) -> str:
        calls.append(text)
        return text

    for text in ("a", "b", "c", "a"):
        echo(text)
    # "c" found the memo full and emptied it, so "a" is computed again.
    assert calls == ["a", "b", "c", "a"]


def test_errors_and_long_texts_are_not_remembered() -> None:
    calls: list[str] = []

    @memoised(8)
    def strict(text: str) -> str:
        calls.append(text)
        if text == "bad":
            raise RemoteProtocolError("bad")
        return text

    for _ in range(2):
        with pytest.raises(RemoteProtocolError):
            strict("bad")
    long = "x" * (MAX_MEMO_TEXT + 1)
    strict(long)
    strict(long)
    assert calls == ["bad", "bad", long, long]


def test_peeks_agree_with_the_parsers() -> None:
    value = '"Alice" <sip:alice@example.test;transport=tcp>;tag=1'
    assert peek_name_addr(value) == parse_name_addr(value)
    assert peek_name_addr(value) is peek_name_addr(value)
    via = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport"
    assert peek_via(via) == parse_via(via)
    with pytest.raises(RemoteProtocolError):
        peek_via("SIP/2.0/UDP")


# --- what the memos share cannot be changed ------------------------------------------

ADDRESS = '"Alice" <sip:alice@example.test;transport=tcp>;tag=1'
VIA = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport"


def _address_mutations() -> list[Callable[[NameAddr], object]]:
    return [
        lambda a: setattr(a, "display_name", "Mallory"),
        lambda a: setattr(a, "uri", parse_uri("sip:mallory@example.test")),
        lambda a: setattr(a, "angle", False),
        lambda a: delattr(a, "params"),
        lambda a: a.params.set("tag", "2"),
        lambda a: a.params.remove("tag"),
        lambda a: setattr(a, "tag", "2"),
        lambda a: a.uri.params.set("transport", "udp"),
        lambda a: setattr(a.uri, "user", "mallory"),
    ]


@pytest.mark.parametrize("mutate", _address_mutations())
def test_a_shared_address_refuses_every_change(mutate: Callable[[NameAddr], object]) -> None:
    shared = peek_name_addr(ADDRESS)
    with pytest.raises(FrozenInstanceError):
        mutate(shared)
    assert str(peek_name_addr(ADDRESS)) == ADDRESS  # what the next reader sees
    assert peek_name_addr(ADDRESS) is shared


def test_copies_of_shared_values_are_fresh_and_mutable() -> None:
    shared = peek_name_addr(ADDRESS)
    mine = shared.copy()
    assert type(mine) is NameAddr and mine == shared
    mine.tag = "2"
    mine.display_name = "Bob"
    assert str(shared) == ADDRESS and mine != shared
    via = peek_via(VIA).copy()
    assert type(via) is Via
    via.params.set("received", "198.51.100.7")
    assert str(peek_via(VIA)) == VIA


def test_parse_returns_fresh_mutable_values() -> None:
    first, second = parse_name_addr(ADDRESS), parse_name_addr(ADDRESS)
    assert first is not second and type(first) is NameAddr
    first.params.set("tag", "9")
    assert second.tag == "1"
    contact = parse_contact_value(ADDRESS)
    assert contact is not None and not contact.params.is_frozen
    via = parse_via(VIA)
    via.params.set("rport", "5060")  # what a server does on receipt (RFC 3581)
    assert str(peek_via(VIA)) == VIA


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: setattr(v, "host", "203.0.113.9"),
        lambda v: setattr(v, "port", 1),
        lambda v: delattr(v, "transport"),
        lambda v: v.params.set("branch", "z9hG4bKother"),
        lambda v: v.params.remove("rport"),
    ],
)
def test_a_shared_via_refuses_every_change(mutate: Callable[[Via], object]) -> None:
    shared = peek_via(VIA)
    with pytest.raises(FrozenInstanceError):
        mutate(shared)
    assert str(peek_via(VIA)) == VIA and peek_via(VIA) is shared


def test_shared_values_are_hashable_and_equal_to_fresh_ones() -> None:
    assert isinstance(peek_name_addr(ADDRESS), SharedNameAddr)
    assert isinstance(peek_via(VIA), SharedVia)
    assert {peek_name_addr(ADDRESS): 1}[parse_name_addr(ADDRESS).frozen()] == 1
    assert {peek_via(VIA): 1}[parse_via(VIA).frozen()] == 1
    with pytest.raises(TypeError):
        hash(parse_name_addr(ADDRESS))
    star = peek_contact_value("*")
    assert star is None
    with pytest.raises(FrozenInstanceError):
        parse_cseq("1 INVITE").seq = 2  # type: ignore[misc]


def test_frozen_copies_do_not_follow_the_original() -> None:
    mine = parse_name_addr(ADDRESS)
    shared = mine.frozen()
    assert shared.frozen() is shared
    mine.params.set("tag", "2")
    assert shared.tag == "1"


_ADDRESSES = st.sampled_from(
    [
        "<sip:a@b>",
        "sip:a@b;tag=x",
        '"A B" <sips:a@[::1]:5061;lr>;tag=1;expires=60',
        "<tel:+1-201-555-0123>;q=0.5",
        "<urn:uuid:1>",
        "Bob <sip:bob@example.test?subject=hi>",
    ]
)


@given(_ADDRESSES, st.text(alphabet="abc123", min_size=1, max_size=6))
def test_peek_agrees_with_parse_and_aor_is_stable(value: str, tag: str) -> None:
    text = value if ";tag=" in value else f"{value};tag={tag}"
    shared, fresh = peek_name_addr(text), parse_name_addr(text)
    assert shared == fresh and str(shared) == str(fresh)
    assert shared.aor == fresh.aor
    assert shared.aor == shared.aor  # computed once, the same after
