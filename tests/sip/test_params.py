"""Tests for conclave.sip.params: header and URI parameter lists."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conclave.sip.errors import LocalProtocolError, RemoteProtocolError
from conclave.sip.limits import MAX_PARAMS
from conclave.sip.params import Params, parse_params

Items = list[tuple[str, str | None]]

# --- header parameters (RFC 3261 §7.3.1, generic-param) -----------------------

HEADER_OK: list[tuple[str, Items]] = [
    ("", []),
    ("   ", []),
    (";tag=1", [("tag", "1")]),
    (";lr", [("lr", None)]),
    (";tag=abc;expires=3600;lr", [("tag", "abc"), ("expires", "3600"), ("lr", None)]),
    # RFC 4475 wsinv: LWS around ';' and '=' (folding already unfolded).
    (" ;   tag    = 1918181833n", [("tag", "1918181833n")]),
    (
        " ; newparam = newvalue ;  secondparam ; q = 0.33",
        [("newparam", "newvalue"), ("secondparam", None), ("q", "0.33")],
    ),
    # quoted-string values are kept raw, with quotes and quoted-pairs.
    (';+sip.instance="<urn:uuid:1234>"', [("+sip.instance", '"<urn:uuid:1234>"')]),
    (';x="a \\"b\\" ;,c"', [("x", '"a \\"b\\" ;,c"')]),
    (';x=""', [("x", '""')]),
    # RFC 4475 intmeth: every token character, and UTF-8 inside quotes.
    (
        ";fromParam''~+*_!.-%=\"\u0440\u0430\u0431\";tag=_token~1'+`*%!-.",
        [("fromParam''~+*_!.-%", '"\u0440\u0430\u0431"'), ("tag", "_token~1'+`*%!-.")],
    ),
    # host values: IPv4, IPv6 reference, and (RFC 5118 §4.5) bare IPv6.
    (";received=192.0.2.1", [("received", "192.0.2.1")]),
    (";received=[2001:db8::9:255]", [("received", "[2001:db8::9:255]")]),
    (
        ";received=2001:db8::9:255;branch=z9hG4bKas3",
        [("received", "2001:db8::9:255"), ("branch", "z9hG4bKas3")],
    ),
    # '%' is a token character: header parameter values are never decoded.
    (";branch=z9hG4bK209%fzsnel234", [("branch", "z9hG4bK209%fzsnel234")]),
    (";Tag=X", [("Tag", "X")]),
]

HEADER_BAD = [
    ";",  # trailing SEMI with no parameter
    ";;",
    ";;;;",  # RFC 4475 badinv01 Contact
    ";tag=1;",
    "tag=1",  # must start with ';'
    ";=x",
    "; =x",
    ";tag=",
    ";tag= ",
    ";tag=a b",
    ";tag=a,b",
    ";tag=a/b",
    ';tag="unterminated',
    ';tag="a"b',
    ";tag=1;TAG=2",  # duplicate, case-insensitively
    ";ta g=1",
    ";t\u00e4g=1",
    ";tag=\u00e4",
    ";a=1 x",
    "x;a=1",
]


@pytest.mark.parametrize(("text", "items"), HEADER_OK)
def test_header_params_parse(text: str, items: Items) -> None:
    params = parse_params(text, uri=False)
    assert params.items() == items
    assert not params.uri
    assert parse_params(str(params), uri=False) == params


@pytest.mark.parametrize("text", HEADER_BAD)
def test_header_params_reject(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_params(text, uri=False)
    assert info.value.status == 400


def test_header_params_render_compactly() -> None:
    assert str(parse_params(' ; a = 1 ;  b ; c = "x y"', uri=False)) == ';a=1;b;c="x y"'


# --- URI parameters (RFC 3261 §19.1.1, paramchar) ------------------------------

URI_OK: list[tuple[str, Items]] = [
    ("", []),
    (";lr", [("lr", None)]),
    (";transport=tcp;lr", [("transport", "tcp"), ("lr", None)]),
    (";maddr=[2001:db8::1]", [("maddr", "[2001:db8::1]")]),
    (";x=a/b:c&d+e$f[g]", [("x", "a/b:c&d+e$f[g]")]),
    (";unknown-param=-_.!~*'()", [("unknown-param", "-_.!~*'()")]),
    # RFC 4475 esc01: decoded once, never twice: %25%34%31 is "%41", not "A".
    (";%6C%72;n%61me=v%61lue%25%34%31", [("lr", None), ("name", "value%41")]),
    (";x=%00", [("x", "\x00")]),
    (";x=%C3%A9", [("x", "\u00e9")]),
    (";x=%FF", [("x", "\udcff")]),
    (";x=a%3Bb%3Dc", [("x", "a;b=c")]),
]

URI_BAD = [
    ";",
    ";;",
    ";lr;",
    "lr",
    ";=x",
    ";x=",
    "; lr",
    ";lr ",
    ";x=a=b",
    ";x=a b",
    ";x=a,b",
    ";x=a@b",
    ';x="a"',
    ";x=%4",
    ";x=%ZZ",
    ";x=%",
    ";x=<a>",
    ";x=\u00e9",
    ";lr;LR",
    ";x=1;%78=2",  # duplicate after decoding
]


@pytest.mark.parametrize(("text", "items"), URI_OK)
def test_uri_params_parse(text: str, items: Items) -> None:
    params = parse_params(text, uri=True)
    assert params.items() == items
    assert params.uri
    assert parse_params(str(params), uri=True) == params


@pytest.mark.parametrize("text", URI_BAD)
def test_uri_params_reject(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_params(text, uri=True)
    assert info.value.status == 400


def test_uri_params_escape_on_output() -> None:
    params = Params([("name", "value%41"), ("a;b", "c=d e"), ("lr", None)], uri=True)
    assert str(params) == ";name=value%2541;a%3Bb=c%3Dd%20e;lr"
    assert parse_params(str(params), uri=True) == params
    assert str(parse_params(";n%61me=%7e", uri=True)) == ";name=~"


@pytest.mark.parametrize("uri", [False, True])
def test_max_params(uri: bool) -> None:
    ok = "".join(f";p{i}" for i in range(MAX_PARAMS))
    assert len(parse_params(ok, uri=uri)) == MAX_PARAMS
    with pytest.raises(RemoteProtocolError) as info:
        parse_params(ok + ";extra", uri=uri)
    assert info.value.status == 400


# --- the container ------------------------------------------------------------


def test_lookup_is_case_insensitive_and_spelling_is_kept() -> None:
    params = parse_params(";Tag=abc;LR", uri=False)
    assert params.get("tag") == "abc"
    assert params["TAG"] == "abc"
    assert "lr" in params and "Lr" in params
    assert params.get("lr") is None and params.get("lr", "dflt") is None
    assert params.get("missing") is None
    assert params.get("missing", "dflt") == "dflt"
    assert "missing" not in params
    assert 3 not in params
    assert params.names() == ["Tag", "LR"]
    assert list(params) == ["Tag", "LR"]
    assert str(params) == ";Tag=abc;LR"
    with pytest.raises(KeyError):
        params["missing"]


def test_set_replaces_in_place_and_appends() -> None:
    params = parse_params(";a=1;b=2", uri=False)
    params.set("A", "3")
    params.set("c")
    assert params.items() == [("A", "3"), ("b", "2"), ("c", None)]
    params.remove("B")
    params.remove("nonexistent")
    assert params.items() == [("A", "3"), ("c", None)]
    assert len(params) == 2 and params


def test_copy_is_independent() -> None:
    params = parse_params(";a=1", uri=True)
    clone = params.copy()
    clone.set("b", "2")
    assert params.items() == [("a", "1")]
    assert clone.uri
    assert clone != params


def test_equality() -> None:
    assert parse_params(";tag=1;lr", uri=False) == parse_params(";TAG=1;LR", uri=False)
    assert parse_params(";tag=1", uri=False) != parse_params(";tag=2", uri=False)
    assert parse_params(";a;b", uri=False) != parse_params(";b;a", uri=False)  # ordered
    assert parse_params(";a", uri=False) != parse_params(";a=1", uri=False)
    assert parse_params(";a", uri=False) != parse_params(";a;b", uri=False)
    assert Params() == Params()
    assert Params() != "x"
    assert not Params()


def test_unquoted() -> None:
    params = parse_params(';a="x \\"y\\"";b=tok;c', uri=False)
    assert params.unquoted("a") == 'x "y"'
    assert params.get("a") == '"x \\"y\\""'
    assert params.unquoted("b") == "tok"
    assert params.unquoted("c") is None
    assert params.unquoted("d") is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("", "1"),
        ("a b", "1"),
        ("a;b", None),
        ("tag", ""),
        ("tag", "a b"),
        ("tag", "x\r\nVia: evil"),
    ],
)
def test_header_setter_refuses_what_would_not_render(name: str, value: str | None) -> None:
    with pytest.raises(LocalProtocolError):
        Params().set(name, value)


def test_uri_setter_refuses_empty() -> None:
    with pytest.raises(LocalProtocolError):
        Params(uri=True).set("", "x")
    with pytest.raises(LocalProtocolError):
        Params(uri=True).set("x", "")


def test_constructor_validates() -> None:
    assert Params([("tag", "1")]).items() == [("tag", "1")]
    with pytest.raises(LocalProtocolError):
        Params([("tag", "a b")])


# --- properties ---------------------------------------------------------------


@given(st.text(max_size=80))
def test_header_params_parse_or_remote_error(text: str) -> None:
    try:
        params = parse_params(text, uri=False)
    except RemoteProtocolError as exc:
        assert exc.status == 400
    else:
        assert parse_params(str(params), uri=False) == params


_URIISH = st.text(alphabet=";=%0123456789abcdefABCDEF-_.!~*'()[]/:&+$ ,@\"", max_size=60)


@given(st.one_of(st.text(max_size=80), _URIISH))
def test_uri_params_parse_or_remote_error(text: str) -> None:
    try:
        params = parse_params(text, uri=True)
    except RemoteProtocolError as exc:
        assert exc.status == 400
    else:
        assert parse_params(str(params), uri=True) == params


_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f")


@given(
    st.dictionaries(
        st.text(_PRINTABLE, min_size=1, max_size=8).map(str.lower),
        st.one_of(st.none(), st.text(_PRINTABLE, min_size=1, max_size=8)),
        max_size=6,
    )
)
def test_uri_params_round_trip_any_text(items: dict[str, str | None]) -> None:
    params = Params(items.items(), uri=True)
    assert parse_params(str(params), uri=True) == params
