"""Tests for conclave.sip.uri: SIP/SIPS, tel and other URIs."""

from __future__ import annotations

import contextlib
import time
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conclave.sip.errors import LocalProtocolError, RemoteProtocolError
from conclave.sip.limits import MAX_PARAMS
from conclave.sip.params import Params
from conclave.sip.uri import (
    URI,
    AbsoluteURI,
    SipURI,
    TelURI,
    check_host,
    host_ip,
    is_ip_address,
    parse_uri,
)

TORTURE = Path(__file__).resolve().parents[1] / "data" / "sip-torture"

# --- SIP and SIPS: (text, expected fields) -------------------------------------
# Expected: scheme, user, password, host, port, params items, headers.

SIP_OK: list[tuple[str, dict[str, Any]]] = [
    ("sip:example.com", {"host": "example.com"}),
    ("sip:alice@atlanta.com", {"user": "alice", "host": "atlanta.com"}),
    ("SIPS:Alice@AtLanTa.CoM", {"scheme": "sips", "user": "Alice", "host": "AtLanTa.CoM"}),
    (
        "sip:alice:secretword@atlanta.com;transport=tcp",
        {
            "user": "alice",
            "password": "secretword",
            "host": "atlanta.com",
            "params": [("transport", "tcp")],
        },
    ),
    ("sip:alice:@atlanta.com", {"user": "alice", "password": "", "host": "atlanta.com"}),
    (
        "sips:alice@atlanta.com?subject=project%20x&priority=urgent",
        {
            "scheme": "sips",
            "user": "alice",
            "host": "atlanta.com",
            "headers": [("subject", "project x"), ("priority", "urgent")],
        },
    ),
    (
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        {
            "user": "+1-212-555-1212",
            "password": "1234",
            "host": "gateway.com",
            "params": [("user", "phone")],
        },
    ),
    ("sips:1212@gateway.com", {"scheme": "sips", "user": "1212", "host": "gateway.com"}),
    ("sip:alice@192.0.2.4", {"user": "alice", "host": "192.0.2.4"}),
    (
        "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
        {
            "host": "atlanta.com",
            "params": [("method", "REGISTER")],
            "headers": [("to", "alice@atlanta.com")],
        },
    ),
    ("sip:alice;day=tuesday@atlanta.com", {"user": "alice;day=tuesday", "host": "atlanta.com"}),
    ("sip:host.example.com.:5060", {"host": "host.example.com.", "port": 5060}),
    ("sip:h:0", {"host": "h", "port": 0}),
    ("sip:h:65535", {"host": "h", "port": 65535}),
    ("sip:h:0005060", {"host": "h", "port": 5060}),
    ("sip:1host-x.example-1.com", {"host": "1host-x.example-1.com"}),
    ("sip:h?body=", {"host": "h", "headers": [("body", "")]}),
    (
        "sip:h;lr;transport=FOO;x",
        {"host": "h", "params": [("lr", None), ("transport", "FOO"), ("x", None)]},
    ),
    # RFC 4475 esc01: escapes in the user part, decoded once.
    (
        "sip:sips%3Auser%40example.com@example.net",
        {"user": "sips:user@example.com", "host": "example.net"},
    ),
    ("sip:%75se%72@example.com", {"user": "user", "host": "example.com"}),
    ("sip:I%20have%20spaces@example.net", {"user": "I have spaces", "host": "example.net"}),
    (
        "sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31",
        {
            "user": "caller",
            "host": "host5.example.net",
            "params": [("lr", None), ("name", "value%41")],
        },
    ),
    ("sip:%2541@h", {"user": "%41", "host": "h"}),
    # RFC 4475 escnull: %00 survives and is not a terminator.
    ("sip:null-%00-null@example.com", {"user": "null-\x00-null", "host": "example.com"}),
    ("sip:%00%00@host5.example.com", {"user": "\x00\x00", "host": "host5.example.com"}),
    ("sip:%C3%A9%FF@h", {"user": "\u00e9\udcff", "host": "h"}),
    # RFC 4475 semiuri: ';' in the user part belongs to the user.
    (
        "sip:user;par=u%40example.net@example.com",
        {"user": "user;par=u@example.net", "host": "example.com"},
    ),
    # RFC 4475 intmeth: every legal user and password character.
    (
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
        {
            "user": "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*",
            "password": "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)",
            "host": "example.com",
        },
    ),
    # RFC 4475 escruri / regescrt: escaped headers (a message layer may refuse them).
    (
        "sip:user@example.com?Route=%3Csip:example.com%3E",
        {"user": "user", "host": "example.com", "headers": [("Route", "<sip:example.com>")]},
    ),
    # RFC 5118.
    ("sip:[2001:db8::10]", {"host": "[2001:db8::10]"}),
    ("sip:[2001:db8::10]:5070", {"host": "[2001:db8::10]", "port": 5070}),
    ("sip:[2001:db8::10:5070]", {"host": "[2001:db8::10:5070]"}),
    ("sip:user@[2001:db8:::192.0.2.1]", {"user": "user", "host": "[2001:db8:::192.0.2.1]"}),
    ("sip:user@[2001:db8::192.0.2.1]", {"user": "user", "host": "[2001:db8::192.0.2.1]"}),
    ("sip:ted@[::ffff:192.0.2.2]", {"user": "ted", "host": "[::ffff:192.0.2.2]"}),
    (
        "sip:[::1]:5061;transport=tls;maddr=[2001:DB8::2]",
        {
            "host": "[::1]",
            "port": 5061,
            "params": [("transport", "tls"), ("maddr", "[2001:DB8::2]")],
        },
    ),
]

SIP_BAD = [
    "sip:",
    "sip:@example.com",
    "sip:alice@",
    "sip:alice@:5060",
    "sip:example.com:",
    "sip:example.com:50a",
    "sip:example.com:65536",
    "sip:example.com:99999999999999999999999999",
    "sip:example.com:" + "9" * 5000,  # would overflow int() digit limits
    "sip:example.com:-1",
    "sip:example..com",
    "sip:.example.com",
    "sip:example.com-",
    "sip:-example.com",
    "sip:example.123",
    "sip:123",
    "sip:1.2.3",
    "sip:256.1.1.1",
    "sip:1.2.3.4.5",
    "sip:exa_mple.com",
    "sip:b%41.com",  # escapes are not allowed in a host
    "sip:a@b%2Ecom",
    "sip:a@b@c",
    "sip:a:b:c@d",
    "sip:a%4@b",
    "sip:a%ZZ@b",
    "sip:a b@c",
    "sip:alice@example.com; lr",  # RFC 4475 lwsruri
    "sip:alice@example.com;",
    "sip:alice@example.com;;lr",
    "sip:alice@example.com;lr=",
    "sip:alice@example.com?",
    "sip:alice@example.com?a",
    "sip:alice@example.com?=b",
    "sip:alice@example.com?a=b&",
    "sip:alice@example.com?a=b=c",
    "sip:alice@example.com#frag",
    "sip:<alice@example.com>",
    "<sip:alice@example.com>",  # RFC 4475 ltgtruri
    "sip:alice@example.com>",
    'sip:"alice"@example.com',
    "sip:\u00e9@example.com",
    "sip:alice@example.com\r\n",
    "sip:alice@ex\x00ample.com",
    # RFC 5118 §4.2: IPv6 without brackets.
    "sip:2001:db8::10",
    "sip:user@2001:db8::10",
    "sip:[2001:db8::10",
    "sip:[2001:db8::10]5070",
    "sip:[2001:db8::10]:",
    "sip:[2001:db8::g]",
    "sip:[1:2:3:4:5:6:7:8:9]",
    "sip:[2001:db8:::1]",  # three colons are tolerated only before an IPv4 part
    "sip:[2001:db8:::192.0.2]",
    "sip:[192.0.2.1]",
    "sip:[fe80::1%25eth0]",
    "sip:[]",
    "sip:a[::1]",
    " sip:a@b",
    "sip :a@b",
    "sip",
    "",
    ":",
    "1sip:a@b",
]


def _fields(uri: SipURI) -> dict[str, Any]:
    return {
        "scheme": uri.scheme,
        "user": uri.user,
        "password": uri.password,
        "host": uri.host,
        "port": uri.port,
        "params": uri.params.items(),
        "headers": list(uri.headers),
    }


@pytest.mark.parametrize(("text", "expected"), SIP_OK)
def test_parse_sip(text: str, expected: dict[str, Any]) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, SipURI)
    want = {
        "scheme": "sip",
        "user": None,
        "password": None,
        "port": None,
        "params": [],
        "headers": [],
        **expected,
    }
    assert _fields(uri) == want
    assert parse_uri(str(uri)) == uri
    assert uri.equivalent(parse_uri(str(uri)))


@pytest.mark.parametrize("text", SIP_BAD)
def test_parse_sip_rejects(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_uri(text)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("text", "rendered"),
    [
        ("sip:%75se%72@example.com", "sip:user@example.com"),
        ("SIP:alice@example.com", "sip:alice@example.com"),
        ("sip:sips%3Auser%40example.com@example.net", "sip:sips%3Auser%40example.com@example.net"),
        ("sip:a@h;n%61me=v%61lue%25%34%31", "sip:a@h;name=value%2541"),
        ("sip:null-%00-null@example.com", "sip:null-%00-null@example.com"),
        ("sip:%c3%a9%ff@h", "sip:%C3%A9%FF@h"),
        ("sip:I%20have%20spaces@h", "sip:I%20have%20spaces@h"),
        ("sip:a:p%40ss%3Aw@h", "sip:a:p%40ss%3Aw@h"),
        ("sip:h?to=sip:bob%40biloxi.com&x=%3C%3E", "sip:h?to=sip:bob%40biloxi.com&x=%3C%3E"),
        ("sip:[2001:db8::10]:05070", "sip:[2001:db8::10]:5070"),
    ],
)
def test_render_escapes_only_what_must_be_escaped(text: str, rendered: str) -> None:
    assert str(parse_uri(text)) == rendered


def test_too_many_uri_headers() -> None:
    ok = "sip:h?" + "&".join(f"h{i}=v" for i in range(MAX_PARAMS))
    assert len(parse_uri(ok).headers) == MAX_PARAMS  # type: ignore[union-attr]
    with pytest.raises(RemoteProtocolError):
        parse_uri(ok + "&x=y")
    with pytest.raises(RemoteProtocolError):
        parse_uri("sip:h" + "".join(f";p{i}" for i in range(MAX_PARAMS + 1)))


# --- convenience views ---------------------------------------------------------


def test_properties() -> None:
    uri = parse_uri("sips:bob@[2001:db8::1]:5061;Transport=TLS;lr;maddr=239.255.255.1;user=Phone")
    assert isinstance(uri, SipURI)
    assert uri.secure
    assert uri.transport == "tls"
    assert uri.lr
    assert uri.maddr == "239.255.255.1"
    assert uri.user_param == "phone"
    assert uri.method_param is None
    assert uri.host_port == "[2001:db8::1]:5061"
    plain = parse_uri("sip:h;method=INVITE")
    assert isinstance(plain, SipURI)
    assert not plain.secure and not plain.lr
    assert plain.transport is None and plain.maddr is None and plain.user_param is None
    assert plain.method_param == "INVITE"
    assert plain.host_port == "h"


def test_copy_applies_changes_and_checks_them() -> None:
    uri = parse_uri("sip:alice@h;lr?a=b")
    assert isinstance(uri, SipURI)
    params = uri.params.copy()
    params.set("transport", "tcp")
    clone = uri.copy(port=5070, params=params, headers=[*uri.headers, ("c", "d")])
    assert str(uri) == "sip:alice@h;lr?a=b"
    assert str(clone) == "sip:alice@h:5070;lr;transport=tcp?a=b&c=d"
    params.set("late", "1")  # the URI kept its own frozen copy
    assert str(clone) == "sip:alice@h:5070;lr;transport=tcp?a=b&c=d"
    with pytest.raises(LocalProtocolError):
        uri.copy(port=70000)


@pytest.mark.parametrize("text", ["sip:alice@h;lr?a=b", "tel:+1-201-555-0123;ext=1", "urn:x:y"])
def test_uris_are_immutable_and_hashable(text: str) -> None:
    # One parsed URI is shared by every message and memo that names it.
    uri = parse_uri(text)
    with pytest.raises(FrozenInstanceError):
        uri.scheme = "sips"  # type: ignore[misc]
    if not isinstance(uri, AbsoluteURI):
        assert uri.params.is_frozen
        with pytest.raises(FrozenInstanceError):
            uri.params.set("x", "1")
        with pytest.raises(FrozenInstanceError):
            uri.params.remove("lr")
    if isinstance(uri, SipURI):
        assert isinstance(uri.headers, tuple)
    assert hash(uri) == hash(parse_uri(text)) and {uri: 1}[parse_uri(text)] == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": ""},
        {"host": "a b"},
        {"host": "evil.com\r\nVia: x"},
        {"host": "2001:db8::1"},
        {"host": "h", "scheme": "http"},
        {"host": "h", "user": ""},
        {"host": "h", "password": "x"},
        {"host": "h", "port": -1},
        {"host": "h", "port": 65536},
        {"host": "h", "headers": [("", "x")]},
    ],
)
def test_construction_is_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        SipURI(**kwargs)


def test_construction_escapes_on_output() -> None:
    uri = SipURI(
        scheme="SIPS",
        user="a@b:c d",
        password="p:w@",
        host="example.com",
        params=Params([("x", "1"), ("y", "1 2;3")], uri=True),
        headers=(("Subject", "hi there&more"),),
    )
    assert uri.scheme == "sips"
    assert uri.params.uri
    text = str(uri)
    assert text == (
        "sips:a%40b%3Ac%20d:p%3Aw%40@example.com;x=1;y=1%202%3B3?Subject=hi%20there%26more"
    )
    assert parse_uri(text) == uri


def test_header_kind_params_become_frozen_uri_params() -> None:
    given = Params([("x", "1")])
    uri = SipURI(host="h", params=given)
    assert uri.params.uri and uri.params.is_frozen and str(uri) == "sip:h;x=1"
    given.set("y", "2")  # the caller's list stays the caller's
    assert str(uri) == "sip:h;x=1"


def test_check_host_and_host_ip() -> None:
    check_host("example.com")
    check_host("[::1]")
    with pytest.raises(RemoteProtocolError):
        check_host("::1")
    assert str(host_ip("[2001:db8:0::1]")) == "2001:db8::1"
    assert str(host_ip("[2001:db8:::192.0.2.1]")) == "2001:db8::c000:201"
    assert str(host_ip("192.0.2.1")) == "192.0.2.1"
    assert host_ip("example.com") is None


@pytest.mark.parametrize(
    ("text", "ip"),
    [
        ("192.0.2.1", True),
        ("::1", True),
        ("2001:db8::1", True),
        ("[::1]", False),  # bracketed is the URI form, not an address
        ("example.com", False),
        ("192.0.2.256", False),
        ("", False),
    ],
)
def test_is_ip_address(text: str, ip: bool) -> None:
    assert is_ip_address(text) is ip


# --- RFC 3261 §19.1.4 equivalence ------------------------------------------------

EQUIVALENT = [
    # The RFC's own examples.
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    (
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    ),
    (
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
    ),
    # Further consequences of the rules.
    ("sip:alice@atlanta.com;lr", "sip:alice@atlanta.com"),
    ("sip:alice@atlanta.com;maddr=X.com", "sip:alice@atlanta.com;MADDR=x.COM"),
    ("sip:a@h;x=%41", "sip:a@h;x=a"),
    ("sip:a@h?Subject=x", "sip:a@h?subject=x"),
    ("sip:a:p%77@h", "sip:a:pw@h"),
    ("sips:a@h", "SIPS:a@h"),
    # RFC 5954 §4: textual forms of one IP address match.
    ("sip:[2001:db8::1]", "sip:[2001:DB8:0:0:0:0:0:1]"),
    ("sip:[2001:db8:::192.0.2.1]", "sip:[2001:db8::c000:201]"),
    ("sip:192.0.2.1", "sip:192.000.002.001"),
]

NOT_EQUIVALENT = [
    # The RFC's own examples.
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    # Further consequences of the rules.
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
    ("sip:atlanta.com", "sip:alice@atlanta.com"),
    ("sip:alice@atlanta.com", "sip:alice:pw@atlanta.com"),
    ("sip:alice:pw@atlanta.com", "sip:alice:PW@atlanta.com"),
    ("sip:alice:@atlanta.com", "sip:alice@atlanta.com"),
    ("sip:a@h", "sip:a@h;user=phone"),
    ("sip:a@h", "sip:a@h;ttl=1"),
    ("sip:a@h", "sip:a@h;method=INVITE"),
    ("sip:a@h", "sip:a@h;maddr=h"),
    ("sip:a@h;user=ip", "sip:a@h;user=phone"),
    ("sip:a@h;x=1", "sip:a@h;x=2"),
    ("sip:a@h;x", "sip:a@h;x=x"),
    ("sip:a@h?s=x", "sip:a@h?s=X"),
    ("sip:a@h?s=x", "sip:a@h?s=x&t=y"),
    ("sip:a@h?s=x&s=x", "sip:a@h?s=x"),
    ("sip:a@h:5060", "sip:a@h:5061"),
    ("sip:[::1]", "sip:[::2]"),
    ("sip:[::ffff:192.0.2.1]", "sip:192.0.2.1"),
    ("sip:a@h", "tel:+1234"),
]


@pytest.mark.parametrize(("a", "b"), EQUIVALENT)
def test_equivalent(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert ua.equivalent(ub)
    assert ub.equivalent(ua)


@pytest.mark.parametrize(("a", "b"), NOT_EQUIVALENT)
def test_not_equivalent(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert not ua.equivalent(ub)
    assert not ub.equivalent(ua)


def test_structural_equality_is_stricter() -> None:
    assert parse_uri("sip:a@H") != parse_uri("sip:a@h")
    assert parse_uri("sip:a@h;x;y") != parse_uri("sip:a@h;y;x")
    assert parse_uri("sip:%61@h") == parse_uri("sip:a@h")
    assert parse_uri("sip:a@h;X=1") == parse_uri("sip:a@h;x=1")


# --- tel (RFC 3966) --------------------------------------------------------------

TEL_OK = [
    ("tel:+1-201-555-0123", "+1-201-555-0123", [], True, "+12015550123"),
    ("TEL:+1(201)555.0123;ext=1234", "+1(201)555.0123", [("ext", "1234")], True, "+12015550123"),
    (
        "tel:7042;phone-context=example.com",
        "7042",
        [("phone-context", "example.com")],
        False,
        "7042",
    ),
    (
        "tel:863-1234;phone-context=+1-914-555",
        "863-1234",
        [("phone-context", "+1-914-555")],
        False,
        "8631234",
    ),
    ("tel:*67#;phone-context=+1", "*67#", [("phone-context", "+1")], False, "*67#"),
    ("tel:*67%23;phone-context=+1", "*67%23", [("phone-context", "+1")], False, "*67#"),
    ("tel:ABC1;phone-context=x.example", "ABC1", [("phone-context", "x.example")], False, "abc1"),
    (
        "tel:+358-555-1234567;postd=pp22;isub=1411",
        "+358-555-1234567",
        [("postd", "pp22"), ("isub", "1411")],
        True,
        "+3585551234567",
    ),
]

TEL_BAD = [
    "tel:",
    "tel:+",
    "tel:+-",
    "tel:+12a",
    "tel:--",
    "tel:12 34",
    "tel:+1234;",
    "tel:+1234;ext=",
    "tel:+1234;;ext=1",
    "tel:+1234?x=y",
    "tel:+1234@host",
    "tel:%31",
]


@pytest.mark.parametrize(("text", "number", "params", "is_global", "digits"), TEL_OK)
def test_parse_tel(
    text: str, number: str, params: list[tuple[str, str | None]], is_global: bool, digits: str
) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, TelURI)
    assert uri.scheme == "tel"
    assert uri.number == number
    assert uri.params.items() == params
    assert uri.is_global is is_global
    assert uri.digits == digits
    assert parse_uri(str(uri)) == uri


@pytest.mark.parametrize("text", TEL_BAD)
def test_parse_tel_rejects(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_uri(text)


def test_tel_properties_and_equivalence() -> None:
    uri = parse_uri("tel:863-1234;phone-context=+1-914-555;ext=22")
    assert isinstance(uri, TelURI)
    assert uri.phone_context == "+1-914-555"
    assert uri.extension == "22"
    same = parse_uri("tel:8631234;EXT=2-2;phone-context=+1914555")
    assert uri.equivalent(same) and same.equivalent(uri)
    assert parse_uri("tel:+1-201-555-0123").equivalent(parse_uri("tel:+1.201.555.0123"))
    assert parse_uri("tel:7042;phone-context=EXAMPLE.com").equivalent(
        parse_uri("tel:7042;phone-context=example.com")
    )
    assert not parse_uri("tel:+1234").equivalent(parse_uri("tel:+1235"))
    assert not parse_uri("tel:+1234").equivalent(parse_uri("tel:+1234;ext=1"))
    assert not parse_uri("tel:1234;phone-context=+1").equivalent(parse_uri("tel:+1234"))
    assert not parse_uri("tel:+1234").equivalent(parse_uri("sip:+1234@h"))
    assert str(uri.copy(number="+1")) == "tel:+1;phone-context=+1-914-555;ext=22"
    with pytest.raises(LocalProtocolError):
        TelURI(number="12 34")


# --- other schemes (RFC 3261 §19.1, absoluteURI) ---------------------------------

ABSOLUTE_OK = [
    ("nobodyKnowsThisScheme:totallyopaquecontent", "nobodyKnowsThisScheme", "totallyopaquecontent"),
    ("soap.beep://192.0.2.103:3002", "soap.beep", "//192.0.2.103:3002"),
    ("isbn:2983792873", "isbn", "2983792873"),
    ("http://www.example.com", "http", "//www.example.com"),
    ("name:John_Smith", "name", "John_Smith"),
    (
        "mailto:Alice%20Smith@example.com?subject=hi",
        "mailto",
        "Alice%20Smith@example.com?subject=hi",
    ),
    (
        "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        "urn",
        "uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
    ),
    ("im:fred@example.com", "im", "fred@example.com"),
    ("http://[2001:db8::1]:80/a;b?c=d", "http", "//[2001:db8::1]:80/a;b?c=d"),
]

ABSOLUTE_BAD = [
    "http:",
    "http://a b",
    "http://a<b",
    "http://a>",
    "x:%4",
    'x:"y"',
    "x:a#b",
    "x:\u00e9",
]


@pytest.mark.parametrize(("text", "scheme", "opaque"), ABSOLUTE_OK)
def test_parse_absolute(text: str, scheme: str, opaque: str) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, AbsoluteURI)
    assert (uri.scheme, uri.opaque) == (scheme, opaque)
    assert str(uri) == text  # kept verbatim
    assert parse_uri(str(uri)) == uri


@pytest.mark.parametrize("text", ABSOLUTE_BAD)
def test_parse_absolute_rejects(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_uri(text)


def test_absolute_equivalence_and_construction() -> None:
    assert parse_uri("HTTP://x").equivalent(parse_uri("http://x"))
    assert not parse_uri("http://x").equivalent(parse_uri("http://X"))
    assert not parse_uri("http://x").equivalent(parse_uri("sip:x"))
    assert str(AbsoluteURI(scheme="urn", opaque="a").copy(opaque="b")) == "urn:b"
    with pytest.raises(LocalProtocolError):
        AbsoluteURI(scheme="x", opaque="a\r\nb")
    with pytest.raises(LocalProtocolError):
        AbsoluteURI(scheme="1x", opaque="a")


# --- torture messages (RFC 4475, RFC 5118): Request-URIs ----------------------------

TORTURE_RURI = [
    ("rfc4475/esc01", True),
    ("rfc4475/escnull", True),
    ("rfc4475/semiuri", True),
    ("rfc4475/intmeth", True),
    ("rfc4475/escruri", True),  # a valid URI; the message layer refuses the headers
    ("rfc4475/unkscm", True),
    ("rfc4475/novelsc", True),
    ("rfc4475/wsinv", True),
    ("rfc4475/ltgtruri", False),
    ("rfc5118/ipv6-good", True),
    ("rfc5118/ipv6-bad", False),
    ("rfc5118/port-ambiguous", True),
    ("rfc5118/port-unambiguous", True),
    ("rfc5118/ipv6-bug-abnf-3-colons", True),
    ("rfc5118/ipv6-correct-abnf-2-colons", True),
    ("rfc5118/via-received-param-no-delim", True),
]


@pytest.mark.parametrize(("name", "valid"), TORTURE_RURI)
def test_torture_request_uris(name: str, valid: bool) -> None:
    path = TORTURE / f"{name}.dat"
    assert path.exists(), f"torture corpus missing: {path}"
    first_line = path.read_bytes().split(b"\r\n", 1)[0].decode("utf-8", "surrogateescape")
    text = first_line.split(" ")[1]
    if valid:
        uri = parse_uri(text)
        assert parse_uri(str(uri)) == uri
    else:
        with pytest.raises(RemoteProtocolError):
            parse_uri(text)


def test_torture_request_uri_details() -> None:
    port = parse_uri("sip:[2001:db8::10:5070]")
    assert isinstance(port, SipURI)
    assert (port.host, port.port) == ("[2001:db8::10:5070]", None)
    lwsruri = "sip:user@example.com; lr"
    with pytest.raises(RemoteProtocolError):
        parse_uri(lwsruri)


# --- properties ------------------------------------------------------------------

_URI_ALPHABET = st.sampled_from(
    [*"sipSIPtel:@;=?&%[]<>.-_!~*'()/+$, \"#\t0123456789abcdefABCDEF", "sip:", "::", "%00"]
)
_URIISH = st.lists(_URI_ALPHABET, max_size=40).map("".join)


@given(st.one_of(st.text(max_size=80), _URIISH, _URIISH.map(lambda s: "sip:" + s)))
def test_parse_uri_returns_or_raises_remote_error(text: str) -> None:
    try:
        uri = parse_uri(text)
    except RemoteProtocolError as exc:
        assert exc.status == 400
    else:
        again = parse_uri(str(uri))
        assert again == uri
        assert str(again) == str(uri)
        if isinstance(uri, SipURI):
            assert uri.equivalent(again)


_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x3FF), min_size=1, max_size=10)
_LABEL = st.from_regex(r"[a-z]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
_HOSTS = st.one_of(
    st.lists(_LABEL, min_size=1, max_size=3).map(".".join),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)


@st.composite
def _sip_uris(draw: st.DrawFn) -> SipURI:
    user = draw(st.one_of(st.none(), _TEXT))
    names = draw(st.lists(_TEXT.map(str.lower), max_size=4, unique=True))
    return SipURI(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        user=user,
        password=draw(st.one_of(st.none(), st.text(max_size=5))) if user else None,
        host=draw(_HOSTS),
        port=draw(st.one_of(st.none(), st.integers(0, 65535))),
        params=Params([(n, draw(st.one_of(st.none(), _TEXT))) for n in names], uri=True),
        headers=tuple(draw(st.lists(st.tuples(_TEXT, st.text(max_size=8)), max_size=3))),
    )


@given(_sip_uris())
def test_sip_uri_round_trips(uri: SipURI) -> None:
    again = parse_uri(str(uri))
    assert again == uri
    assert uri.equivalent(again)


def _time(func: Any, arg: str) -> float:
    start = time.perf_counter()
    with contextlib.suppress(RemoteProtocolError):
        func(arg)
    return time.perf_counter() - start


@pytest.mark.parametrize(
    "text",
    [
        "sip:" + "a" * 60000 + "!",
        "sip:" + "a-" * 30000,
        "sip:" + "a." * 30000 + "-",
        "sip:" + "%41" * 20000 + "@h",
        "sip:h;" + "a" * 60000 + "=",
        "sip:[" + ":" * 60000 + "]",
        "tel:+" + "-" * 60000 + "x",
        "tel:" + "1-" * 30000 + "x",
        "x:" + "a" * 60000 + " ",
    ],
)
def test_hostile_input_is_linear(text: str) -> None:
    assert _time(parse_uri, text) < 1.0


def _unused(u: URI) -> None:  # the alias is importable and usable in annotations
    del u
