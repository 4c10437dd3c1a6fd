"""split_outside_quotes: the scanner and its fast paths agree."""

from __future__ import annotations

import pytest

from conclave.sip.errors import RemoteProtocolError
from conclave.sip.grammar import split_outside_quotes


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("a, b,c", ["a", " b", "c"]),  # no quotes, no <>: plain split
        ("<sip:a@b;x=1>;q=1", ["<sip:a@b;x=1>;q=1"]),  # <> but nothing to split
        ("<sip:a@b>, <sip:c@d,e>", ["<sip:a@b>", " <sip:c@d,e>"]),  # comma inside <>
        ('"x, y" <sip:a@b>, c', ['"x, y" <sip:a@b>', " c"]),  # comma inside quotes
        ("a > b", ["a > b"]),  # a stray '>' is text
        ("", [""]),
    ],
)
def test_split(text: str, parts: list[str]) -> None:
    assert split_outside_quotes(text, ",") == parts


@pytest.mark.parametrize("text", ["<sip:a@b", "<sip:a@b> <sip:c", '"open <sip:a@b>', "<a>, <b"])
def test_unterminated(text: str) -> None:
    with pytest.raises(RemoteProtocolError, match="unterminated"):
        split_outside_quotes(text, ",")
