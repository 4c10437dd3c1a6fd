"""Tests for conclave.sip.address: name-addr / addr-spec header values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conclave.sip.address import (
    NameAddr,
    aor_from_header,
    aor_of,
    parse_contact_value,
    parse_name_addr,
)
from conclave.sip.errors import LocalProtocolError, RemoteProtocolError
from conclave.sip.grammar import split_outside_quotes
from conclave.sip.params import Params
from conclave.sip.uri import AbsoluteURI, SipURI, parse_uri

TORTURE = Path(__file__).resolve().parents[1] / "data" / "sip-torture"

Items = list[tuple[str, str | None]]

# (value, display_name, str(uri), params, angle)
OK: list[tuple[str, str | None, str, Items, bool]] = [
    ("<sip:a@b>", None, "sip:a@b", [], True),
    ("sip:a@b", None, "sip:a@b", [], False),
    ("  sip:a@b  ", None, "sip:a@b", [], False),
    (
        '"Quoted \\"Name\\"" <sip:a@b;x=y>;tag=1',
        'Quoted "Name"',
        "sip:a@b;x=y",
        [("tag", "1")],
        True,
    ),
    (
        "Bob <sip:bob@biloxi.com>;tag=a6c85cf",
        "Bob",
        "sip:bob@biloxi.com",
        [("tag", "a6c85cf")],
        True,
    ),
    ("Bob  \t Smith <sip:bob@b>", "Bob Smith", "sip:bob@b", [], True),
    ('"" <sip:a@b>', "", "sip:a@b", [], True),
    (
        '"Bell, Alexander" <sip:a.g.bell@example.com>;tag=433423',
        "Bell, Alexander",
        "sip:a.g.bell@example.com",
        [("tag", "433423")],
        True,
    ),
    # addr-spec: everything after the first ';' is a header parameter (§20.10).
    (
        "sip:alice@atlanta.com;tag=1928301774",
        None,
        "sip:alice@atlanta.com",
        [("tag", "1928301774")],
        False,
    ),
    # RFC 4475 lwsdisp: no LWS between display name and '<'.
    (
        "caller<sip:caller@example.com>;tag=323",
        "caller",
        "sip:caller@example.com",
        [("tag", "323")],
        True,
    ),
    ('"caller"<sip:caller@example.com>', "caller", "sip:caller@example.com", [], True),
    # RFC 4475 wsinv: LWS everywhere around parameters.
    (
        "sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n",
        None,
        "sip:vivekg@chair-dnrc.example.com",
        [("tag", "1918181833n")],
        False,
    ),
    (
        '"J Rosenberg \\\\\\""       <sip:jdrosen@example.com>  ;  tag = 98asjd8',
        'J Rosenberg \\"',
        "sip:jdrosen@example.com",
        [("tag", "98asjd8")],
        True,
    ),
    (
        '"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam = newvalue ;'
        "  secondparam ; q = 0.33",
        'Quoted string ""',
        "sip:jdrosen@example.com",
        [("newparam", "newvalue"), ("secondparam", None), ("q", "0.33")],
        True,
    ),
    # RFC 4475 intmeth: token display names using every token character,
    # quoted controls, UTF-8 in a quoted parameter value.
    (
        "token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="
        '"\u0440\u0430";tag=_token~1\'+`*%!-.',
        "token1~` token2'+_ token3*%!.-",
        "sip:mundane@example.com",
        [("fromParam''~+*_!.-%", '"\u0440\u0430"'), ("tag", "_token~1'+`*%!-.")],
        True,
    ),
    (
        '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" '
        "<sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>",
        "BEL:\x07 NUL:\x00 DEL:\x7f",
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com",
        [],
        True,
    ),
    # UTF-8 display names in quotes.
    (
        '"\u00c9lise \u65e5\u672c" <sip:e@example.com>',
        "\u00c9lise \u65e5\u672c",
        "sip:e@example.com",
        [],
        True,
    ),
    # RFC 4475 esc01 / esc02: escapes in the URI; '%' in a display name is text.
    ("sip:%75se%72@example.com", None, "sip:user@example.com", [], False),
    ('"%Z%45" <sip:resource@example.com>', "%Z%45", "sip:resource@example.com", [], True),
    (
        "<sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>",
        None,
        "sip:caller@host5.example.net;lr;name=value%2541",
        [],
        True,
    ),
    # RFC 4475 cparam01 / cparam02: contact-param versus url-param.
    (
        "sip:+19725552222@gw1.example.net;unknownparam",
        None,
        "sip:+19725552222@gw1.example.net",
        [("unknownparam", None)],
        False,
    ),
    (
        "<sip:+19725552222@gw1.example.net;unknownparam>",
        None,
        "sip:+19725552222@gw1.example.net;unknownparam",
        [],
        True,
    ),
    # RFC 4475 regescrt: an escaped header inside <> is fine.
    (
        "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>",
        None,
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
        [],
        True,
    ),
    # RFC 4475 unksm2: other schemes.
    ("isbn:2983792873", None, "isbn:2983792873", [], False),
    (
        "<http://www.example.com>;tag=3234233",
        None,
        "http://www.example.com",
        [("tag", "3234233")],
        True,
    ),
    ("<name:John_Smith>", None, "name:John_Smith", [], True),
    ("tel:+1-201-555-0123;tag=x", None, "tel:+1-201-555-0123", [("tag", "x")], False),
    ("<tel:+1-201-555-0123;ext=1>", None, "tel:+1-201-555-0123;ext=1", [], True),
    # RFC 5118.
    ('"Caller" <sip:caller@[2001:db8::1]>', "Caller", "sip:caller@[2001:db8::1]", [], True),
    ("sip:user@[2001:db8:::192.0.2.1]", None, "sip:user@[2001:db8:::192.0.2.1]", [], False),
    # A '<' inside a quoted parameter value does not make this a name-addr.
    ('sip:a@b;x="<y>"', None, "sip:a@b", [("x", '"<y>"')], False),
    (
        '<sip:a@b>;expires=3600;q=0.7;+sip.instance="<urn:uuid:1>"',
        None,
        "sip:a@b",
        [("expires", "3600"), ("q", "0.7"), ("+sip.instance", '"<urn:uuid:1>"')],
        True,
    ),
]

BAD = [
    "",
    "   ",
    '"Mr. J. User <sip:j.user@example.com>',  # RFC 4475 quotbal
    '"unterminated\\" <sip:a@b>',
    "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",  # RFC 4475 baddn
    "Watson, Thomas <sip:t.watson@example.org>",
    '"Watson, Thomas" < sip:t.watson@example.org >',  # RFC 4475 badaspec
    "<sip:a@b >",
    "< sip:a@b>",
    "sip:user@example.com?Route=%3Csip:sip.example.com%3E",  # RFC 4475 regbadct
    "sip:a,b@c",
    "sip:a@c?x=y",
    '"Joe" <sip:joe@example.org>;;;;',  # RFC 4475 badinv01
    "<sip:a@b>;",
    "<sip:a@b",
    "sip:a@b>",
    "<>",
    "<sip:a@b> x",
    "<sip:a@b>x",
    '"a" "b" <sip:a@b>',
    '"a" b <sip:a@b>',
    'a "b" <sip:a@b>',
    '"a"',
    '"a" sip:a@b',
    "Bob sip:bob@b",
    "Bob",
    "Bo;b <sip:a@b>",
    "\u00c9lise <sip:e@example.com>",  # non-token display names must be quoted
    "<sip:a@b><sip:c@d>",
    "<sip:2001:db8::10>",  # RFC 5118 §4.2
    "<sip:a@b>;tag=1;tag=2",
    "<sip:a@b>;tag=",
    "sip:user;par=u%40example.net@example.com",  # ';' in the user: needs <>
    "<sip:a@b>;tag=a b",
    "*",  # only Contact allows the star
    "<*>",
]


@pytest.mark.parametrize(("value", "display", "uri", "params", "angle"), OK)
def test_parse_name_addr(
    value: str, display: str | None, uri: str, params: Items, angle: bool
) -> None:
    addr = parse_name_addr(value)
    assert addr.display_name == display
    assert str(addr.uri) == uri
    assert addr.params.items() == params
    assert addr.angle is angle
    again = parse_name_addr(str(addr))
    assert again == addr
    assert again.angle is angle


@pytest.mark.parametrize("value", BAD)
def test_parse_name_addr_rejects(value: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_name_addr(value)
    assert info.value.status == 400


def test_regbadct_reason_names_the_fix() -> None:
    with pytest.raises(RemoteProtocolError, match="must use name-addr form"):
        parse_name_addr("sip:user@example.com?Route=%3Csip:sip.example.com%3E")


def test_angle_required() -> None:
    assert parse_name_addr("<sip:p1.example.com;lr>", angle_required=True).uri == parse_uri(
        "sip:p1.example.com;lr"
    )
    with pytest.raises(RemoteProtocolError):
        parse_name_addr("sip:p1.example.com", angle_required=True)


# --- rendering -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("sip:a@b", "sip:a@b"),
        ("sip:a@b;tag=1", "sip:a@b;tag=1"),
        ("<sip:a@b>", "<sip:a@b>"),
        ("<sip:a@b;lr>", "<sip:a@b;lr>"),
        ("Bob <sip:a@b>", '"Bob" <sip:a@b>'),
        ("caller<sip:caller@example.com>;tag=323", '"caller" <sip:caller@example.com>;tag=323'),
        ('"a\\b"  <sip:a@b>  ;  tag = 1', '"ab" <sip:a@b>;tag=1'),
        ('"a\\\\b" <sip:a@b>', '"a\\\\b" <sip:a@b>'),
        ('"NUL:\\\x00" <sip:a@b>', '"NUL:\\\x00" <sip:a@b>'),
        ("<sip:%61@b?x=%3C>", "<sip:a@b?x=%3C>"),
    ],
)
def test_render(value: str, rendered: str) -> None:
    assert str(parse_name_addr(value)) == rendered


def test_render_forces_angle_when_the_uri_needs_it() -> None:
    uri = parse_uri("sip:a@b;lr?x=y")
    addr = NameAddr(uri=uri, angle=False)
    assert str(addr) == "<sip:a@b;lr?x=y>"
    semi_user = NameAddr(uri=parse_uri("sip:a;b@c"), angle=False)
    assert str(semi_user) == "<sip:a;b@c>"
    assert parse_name_addr(str(semi_user)) == semi_user  # angle is not compared


def test_display_name_is_quoted_safely() -> None:
    addr = NameAddr(uri=parse_uri("sip:a@b"), display_name='x"y\\z\x01\x7f\t')
    assert str(addr) == '"x\\"y\\\\z\\\x01\\\x7f\t" <sip:a@b>'
    assert parse_name_addr(str(addr)) == addr
    for evil in ("a\r\nVia: x", "a\nb", "a\rb"):
        with pytest.raises(LocalProtocolError):
            str(NameAddr(uri=parse_uri("sip:a@b"), display_name=evil))


def test_tag_property() -> None:
    addr = parse_name_addr("Alice <sip:alice@atlanta.com>;tag=1928301774")
    assert addr.tag == "1928301774"
    addr.tag = "abc"
    assert str(addr) == '"Alice" <sip:alice@atlanta.com>;tag=abc'
    addr.tag = None
    assert addr.tag is None
    assert str(addr) == '"Alice" <sip:alice@atlanta.com>'
    with pytest.raises(LocalProtocolError):
        addr.tag = "a b"


def test_copy_and_equality() -> None:
    addr = parse_name_addr('"A" <sip:a@b;lr>;tag=1')
    clone = addr.copy()
    assert clone == addr
    clone.params.set("tag", "2")
    assert isinstance(clone.uri, SipURI)
    clone.uri = clone.uri.copy(params=Params(uri=True))
    assert str(addr) == '"A" <sip:a@b;lr>;tag=1'
    assert str(clone) == '"A" <sip:a@b>;tag=2'
    assert clone != addr
    assert parse_name_addr("sip:a@b") == parse_name_addr("<sip:a@b>")
    assert parse_name_addr("A <sip:a@b>") != parse_name_addr("<sip:a@b>")
    assert parse_name_addr("<sip:a@b>") != parse_name_addr('"" <sip:a@b>')


def test_uri_kind_params_are_converted() -> None:
    addr = NameAddr(
        uri=AbsoluteURI(scheme="urn", opaque="x"), params=Params([("q", "1")], uri=True)
    )
    assert not addr.params.uri
    assert str(addr) == "<urn:x>;q=1"


# --- Contact ----------------------------------------------------------------------


def test_contact_star() -> None:
    assert parse_contact_value("*") is None
    assert parse_contact_value("  * ") is None
    contact = parse_contact_value("<sip:a@b>;expires=0")
    assert contact is not None and contact.params.get("expires") == "0"
    for bad in ("**", "* ;expires=0", "<*>"):
        with pytest.raises(RemoteProtocolError):
            parse_contact_value(bad)


# --- canonical addresses of record ---------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "aor"),
    [
        ("sip:alice@example.test", "sip:alice@example.test"),
        ("sip:alice@EXAMPLE.Test", "sip:alice@example.test"),
        ("sips:alice@example.test", "sip:alice@example.test"),
        ("sip:alice:secret@example.test:5061;transport=tls?subject=x", "sip:alice@example.test"),
        ("sip:%61lice@example.test", "sip:alice@example.test"),
        ("sip:Alice@example.test", "sip:Alice@example.test"),  # users are case-sensitive
        ("sip:a%20b@example.test.", "sip:a%20b@example.test"),
    ],
)
def test_aor_of(uri: str, aor: str) -> None:
    assert aor_of(parse_uri(uri)) == aor
    # The header form agrees with the URI form, whatever surrounds the URI.
    assert aor_from_header(f'"Someone" <{uri}>;tag=x') == aor


@pytest.mark.parametrize("uri", ["sip:example.test", "tel:+15551234", "mailto:a@example.test"])
def test_aor_of_refuses_non_aors(uri: str) -> None:
    with pytest.raises(ValueError):
        aor_of(parse_uri(uri))
    assert aor_from_header(f"<{uri}>") is None


@given(
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12),
    st.sampled_from(["Example.TEST", "example.test.", "[2001:DB8::1]", "192.0.2.1", "h"]),
)
def test_aor_of_is_the_uri_without_the_rest(user: str, host: str) -> None:
    uri = SipURI(
        scheme="sips", user=user, password="pw", host=host, port=5061, params=Params([("lr", None)])
    )
    canonical = SipURI(user=user, host=host.lower().rstrip("."))
    assert aor_of(uri) == str(canonical)
    assert parse_uri(aor_of(uri)) == canonical


@pytest.mark.parametrize("value", [None, "", "<sip:a@b", "not an address"])
def test_aor_from_header_is_none_when_absent_or_malformed(value: str | None) -> None:
    assert aor_from_header(value) is None


# --- torture messages ----------------------------------------------------------------

_ADDRESS_HEADERS = {
    "to": "To",
    "t": "To",
    "from": "From",
    "f": "From",
    "contact": "Contact",
    "m": "Contact",
    "route": "Route",
    "record-route": "Record-Route",
}


def _address_values(name: str) -> list[tuple[str, str]]:
    path = TORTURE / f"{name}.dat"
    assert path.exists(), f"torture corpus missing: {path}"
    head = path.read_bytes().split(b"\r\n\r\n", 1)[0].decode("utf-8", "surrogateescape")
    head = re.sub(r"\r\n[ \t]+", " ", head)  # unfold (RFC 3261 §7.3.1)
    values: list[tuple[str, str]] = []
    for line in head.split("\r\n")[1:]:
        raw_name, _, value = line.partition(":")
        header = _ADDRESS_HEADERS.get(raw_name.strip().lower())
        if header is None:
            continue
        if header in ("Contact", "Route", "Record-Route"):
            values += [(header, v) for v in split_outside_quotes(value, ",")]
        else:
            values.append((header, value))
    return values


def _parse_header(header: str, value: str) -> NameAddr | None:
    if header == "Contact":
        return parse_contact_value(value)
    return parse_name_addr(value, angle_required=header in ("Route", "Record-Route"))


TORTURE_OK = [
    "rfc4475/wsinv",
    "rfc4475/intmeth",
    "rfc4475/esc01",
    "rfc4475/escnull",
    "rfc4475/esc02",
    "rfc4475/lwsdisp",
    "rfc4475/longreq",
    "rfc4475/semiuri",
    "rfc4475/unksm2",
    "rfc4475/cparam01",
    "rfc4475/cparam02",
    "rfc4475/regescrt",
    "rfc4475/inv2543",
    "rfc5118/ipv6-good",
    "rfc5118/ipv4-mapped-ipv6",
    "rfc5118/ipv6-bug-abnf-3-colons",
    "rfc5118/mult-ip-in-header",
]

TORTURE_BAD = [
    ("rfc4475/quotbal", "To"),
    ("rfc4475/baddn", "From"),
    ("rfc4475/baddn", "To"),
    ("rfc4475/badaspec", "To"),
    ("rfc4475/regbadct", "Contact"),
    ("rfc4475/badinv01", "Contact"),
]


@pytest.mark.parametrize("name", TORTURE_OK)
def test_torture_addresses_parse(name: str) -> None:
    values = _address_values(name)
    assert values
    for header, value in values:
        addr = _parse_header(header, value)
        if addr is not None:
            assert parse_name_addr(str(addr)) == addr


@pytest.mark.parametrize(("name", "header"), TORTURE_BAD)
def test_torture_addresses_rejected(name: str, header: str) -> None:
    values = [v for h, v in _address_values(name) if h == header]
    assert values
    with pytest.raises(RemoteProtocolError) as info:
        for value in values:
            _parse_header(header, value)
    assert info.value.status == 400


def test_torture_details() -> None:
    esc01 = dict(_address_values("rfc4475/esc01"))
    contact = parse_contact_value(esc01["Contact"])
    assert contact is not None and isinstance(contact.uri, SipURI)
    assert contact.uri.user == "caller"
    assert contact.uri.lr
    assert contact.uri.params.get("name") == "value%41"  # not "valueA"
    escnull = [
        parse_contact_value(v) for h, v in _address_values("rfc4475/escnull") if h == "Contact"
    ]
    users = [c.uri.user for c in escnull if c is not None and isinstance(c.uri, SipURI)]
    assert users == ["\x00", "\x00\x00"]
    cparam01 = dict(_address_values("rfc4475/cparam01"))
    c1 = parse_contact_value(cparam01["Contact"])
    assert c1 is not None and "unknownparam" in c1.params
    cparam02 = dict(_address_values("rfc4475/cparam02"))
    c2 = parse_contact_value(cparam02["Contact"])
    assert c2 is not None and isinstance(c2.uri, SipURI)
    assert "unknownparam" in c2.uri.params and "unknownparam" not in c2.params
    regescrt = dict(_address_values("rfc4475/regescrt"))
    c3 = parse_contact_value(regescrt["Contact"])
    assert c3 is not None and isinstance(c3.uri, SipURI)
    assert c3.uri.headers == (("Route", "<sip:sip.example.com>"),)


# --- properties -------------------------------------------------------------------

_ADDR_ALPHABET = st.sampled_from(
    [*'<>"\\ ;=,?@:.%abcAB12\t*', "sip:", "sip:a@b", "tag", "<sip:x@y>", '"q"']
)
_ADDRISH = st.lists(_ADDR_ALPHABET, max_size=30).map("".join)


@given(st.one_of(st.text(max_size=80), _ADDRISH))
def test_parse_name_addr_returns_or_raises_remote_error(text: str) -> None:
    try:
        addr = parse_contact_value(text)
    except RemoteProtocolError as exc:
        assert exc.status == 400
    else:
        if addr is not None:
            again = parse_name_addr(str(addr))
            assert again == addr
            assert str(again) == str(addr)


@given(
    st.one_of(st.none(), st.text(st.characters(exclude_characters="\r\n"), max_size=12)),
    st.sampled_from(["sip:a@b", "sips:x@[::1]:5061;lr", "tel:+12", "urn:x", "sip:a;b@c?d=e"]),
    st.booleans(),
)
def test_name_addr_round_trips(display: str | None, uri: str, angle: bool) -> None:
    addr = NameAddr(
        uri=parse_uri(uri), display_name=display, params=Params([("tag", "1")]), angle=angle
    )
    assert parse_name_addr(str(addr)) == addr
