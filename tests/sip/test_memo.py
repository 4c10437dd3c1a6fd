"""The bounded memos behind the shared parses (conclave.sip.memo)."""

from __future__ import annotations

import pytest

from conclave.sip.address import parse_name_addr, peek_name_addr
from conclave.sip.errors import RemoteProtocolError
from conclave.sip.fields import parse_via, peek_via
from conclave.sip.memo import MAX_MEMO_TEXT, memoised


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
