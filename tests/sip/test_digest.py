"""Tests for conclave.sip.digest (RFC 7616 / RFC 8760 / RFC 3261 §22 Digest)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conclave.sip.digest import (
    ALGORITHMS,
    Challenge,
    Credentials,
    NonceCounter,
    NonceFactory,
    NonceStatus,
    UnsupportedScheme,
    authorization_value,
    compute_ha1,
    compute_response,
    ha1_by_algorithm,
    parse_challenge,
    parse_credentials,
    verify_response,
)
from conclave.sip.errors import LocalProtocolError, RemoteProtocolError

SECRET = b"0123456789abcdef0123456789abcdef"
SALT = bytes(range(16))

# --------------------------------------------------------------------------- RFC vectors

# RFC 7616 §3.9.1 (HTTP, but the arithmetic is the same for SIP).
RFC7616 = {
    "username": "Mufasa",
    "password": "Circle of Life",
    "realm": "http-auth@example.org",
    "method": "GET",
    "uri": "/dir/index.html",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
}
RFC7616_RESPONSES = {
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_example(algorithm: str) -> None:
    v = RFC7616
    ha1 = compute_ha1(v["username"], v["realm"], v["password"], algorithm)
    response = compute_response(
        ha1=ha1,
        method=v["method"],
        uri=v["uri"],
        nonce=v["nonce"],
        algorithm=algorithm,
        qop="auth",
        nc=1,
        cnonce=v["cnonce"],
    )
    assert response == RFC7616_RESPONSES[algorithm]


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_authorization_header_verifies(algorithm: str) -> None:
    v = RFC7616
    header = (
        f'Digest username="Mufasa",\trealm="{v["realm"]}", uri="{v["uri"]}", '
        f'algorithm={algorithm}, nonce="{v["nonce"]}", nc=00000001, '
        f'cnonce="{v["cnonce"]}", qop=auth, response="{RFC7616_RESPONSES[algorithm]}", '
        f'opaque="{v["opaque"]}"'
    )
    creds = parse_credentials(header)
    assert creds.algorithm == algorithm
    assert creds.nc == 1
    assert creds.opaque == v["opaque"]
    ha1 = compute_ha1(v["username"], v["realm"], v["password"], algorithm)
    assert verify_response(creds, ha1, "GET")
    assert not verify_response(creds, ha1, "POST")


def test_rfc7616_client_side_matches() -> None:
    v = RFC7616
    challenge = Challenge(v["realm"], v["nonce"], "SHA-256", "auth", v["opaque"])
    value = authorization_value(
        challenge,
        username=v["username"],
        password=v["password"],
        method="GET",
        uri=v["uri"],
        cnonce=v["cnonce"],
        nc=1,
    )
    assert parse_credentials(value).response == RFC7616_RESPONSES["SHA-256"]


def test_rfc2617_example() -> None:
    # RFC 2617 §3.5
    ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life", "MD5")
    response = compute_response(
        ha1=ha1,
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        algorithm="MD5",
        qop="auth",
        nc=1,
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


def test_rfc2069_form_without_qop() -> None:
    ha1 = compute_ha1("u", "r", "p", "MD5")
    ha2 = hashlib.md5(b"REGISTER:sip:r").hexdigest()
    expected = hashlib.md5(f"{ha1}:n:{ha2}".encode()).hexdigest()
    got = compute_response(
        ha1=ha1, method="REGISTER", uri="sip:r", nonce="n", algorithm="MD5", qop=None, nc=None,
        cnonce=None,
    )  # fmt: skip
    assert got == expected


def test_sha512_256_is_the_fips_variant_not_truncated_sha512() -> None:
    if "SHA-512-256" not in ALGORITHMS:
        # Offered only where the local OpenSSL has it; then it is never offered.
        assert "sha512_256" not in hashlib.algorithms_available
        return
    ha1 = compute_ha1("a", "b", "c", "SHA-512-256")
    assert ha1 == hashlib.new("sha512_256", b"a:b:c").hexdigest()
    assert ha1 != hashlib.sha512(b"a:b:c").hexdigest()[:64]
    assert len(ha1) == 64


def test_ha1_by_algorithm_and_non_ascii() -> None:
    table = ha1_by_algorithm("J\u00e4s\u00f8n Doe", "example.test", "Secret, or not?")
    assert set(table) == set(ALGORITHMS)
    assert ALGORITHMS[0] == "SHA-256"
    assert (
        table["MD5"]
        == hashlib.md5("J\u00e4s\u00f8n Doe:example.test:Secret, or not?".encode()).hexdigest()
    )


def test_compute_rejects_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        compute_ha1("u", "r", "p", "SHA-1")
    kw = {"ha1": "x", "method": "M", "uri": "u", "nonce": "n", "algorithm": "MD5"}
    with pytest.raises(LocalProtocolError):
        compute_response(**kw, qop="auth", nc=None, cnonce="c")
    with pytest.raises(LocalProtocolError):
        compute_response(**kw, qop="auth-int", nc=1, cnonce="c")
    with pytest.raises(LocalProtocolError):
        compute_response(**kw, qop="auth", nc=2**32, cnonce="c")


# --------------------------------------------------------------------------- round trip


def _server_round_trip(algorithm: str, password: str = "s3cret") -> tuple[Credentials, str]:
    nonces = NonceFactory(SECRET, 300)
    challenge = Challenge("example.test", nonces.make(1000.0, SALT), algorithm, opaque="op")
    client_view = parse_challenge(challenge.to_header_value())
    assert client_view == challenge
    value = authorization_value(
        client_view,
        username="alice",
        password=password,
        method="REGISTER",
        uri="sip:example.test",
        cnonce='abc,def "quoted"',
        nc=1,
    )
    creds = parse_credentials(value)
    assert nonces.check(creds.nonce, 1001.0) is NonceStatus.VALID
    stored = ha1_by_algorithm("alice", "example.test", "s3cret")
    return creds, stored[creds.algorithm]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_round_trip_client_to_server(algorithm: str) -> None:
    creds, ha1 = _server_round_trip(algorithm)
    assert creds.cnonce == 'abc,def "quoted"'
    assert creds.opaque == "op"
    assert verify_response(creds, ha1, "REGISTER")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_wrong_password_fails(algorithm: str) -> None:
    creds, ha1 = _server_round_trip(algorithm, password="guess")
    assert not verify_response(creds, ha1, "REGISTER")


@pytest.mark.parametrize(
    "change",
    [
        {"username": "mallory"},
        {"realm": "other.test"},
        {"nonce": "AAAA"},
        {"uri": "sip:evil.test"},
        {"cnonce": "other"},
        {"nc": 2},
        {"response": "0" * 64},
        {"response": ""},
        {"response": "\u00e9" * 64},
        {"qop": None, "nc": None, "cnonce": None},
        {"algorithm": "MD5"},
        {"algorithm": "SHA-1"},
        {"nc": -1},
    ],
)
def test_tampered_fields_fail(change: dict[str, object]) -> None:
    creds, _ = _server_round_trip("SHA-256")
    tampered = replace(creds, **change)  # type: ignore[arg-type]
    # The server looks HA1 up by the claimed identity and algorithm; even with the
    # same password, another username, realm or algorithm gives another HA1.
    algorithm = tampered.algorithm if tampered.algorithm in ALGORITHMS else "SHA-256"
    ha1 = compute_ha1(tampered.username, tampered.realm, "s3cret", algorithm)
    assert not verify_response(tampered, ha1, "REGISTER")


def test_tampered_method_fails_and_uppercase_hex_passes() -> None:
    creds, ha1 = _server_round_trip("MD5")
    assert not verify_response(creds, ha1, "INVITE")
    assert verify_response(replace(creds, response=creds.response.upper()), ha1, "REGISTER")


def test_challenge_without_qop_gives_rfc2069_credentials_server_refuses() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n"')
    assert challenge.qop is None
    assert challenge.algorithm == "MD5"
    value = authorization_value(
        challenge, username="u", password="p", method="M", uri="sip:x", cnonce="c", nc=1
    )
    creds = parse_credentials(value)
    assert creds.qop is None and creds.nc is None and creds.cnonce is None
    assert not verify_response(creds, compute_ha1("u", "r", "p", "MD5"), "M")


# --------------------------------------------------------------------------- challenges


def test_challenge_to_header_value() -> None:
    c = Challenge("example.test", "abc", "SHA-256", opaque="xyz")
    assert c.to_header_value() == (
        'Digest realm="example.test", nonce="abc", algorithm=SHA-256, qop="auth", opaque="xyz"'
    )
    stale = Challenge("example.test", "abc", "MD5", stale=True)
    assert stale.to_header_value() == (
        'Digest realm="example.test", nonce="abc", algorithm=MD5, qop="auth", stale=true'
    )
    assert parse_challenge(stale.to_header_value()) == stale


def test_challenge_rejects_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        Challenge("r", "n", "SHA-1")
    with pytest.raises(LocalProtocolError):
        Challenge("r", "n", "MD5", qop="auth-int")
    with pytest.raises(LocalProtocolError):
        Challenge("r\r\nX-Evil: 1", "n", "MD5").to_header_value()
    with pytest.raises(LocalProtocolError):
        Credentials("u\n", "r", "n", "sip:x", "0").to_header_value()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('Digest realm="a", nonce="b"', Challenge("a", "b", "MD5", None)),
        (
            'digest REALM="a",NONCE=b,qop="auth,auth-int",algorithm=sha-256,stale=TRUE',
            Challenge("a", "b", "SHA-256", "auth", None, True),
        ),
        (
            'Digest realm="a", domain="sip:a sip:b", nonce="b", qop="auth-int, auth", '
            'opaque="o", stale=false, charset=UTF-8, userhash=false',
            Challenge("a", "b", "MD5", "auth", "o"),
        ),
        ('Digest realm="a", nonce="b", stale=maybe', Challenge("a", "b", "MD5", None)),
    ],
)
def test_parse_challenge_good(value: str, expected: Challenge) -> None:
    assert parse_challenge(value) == expected


@pytest.mark.parametrize(
    ("value", "unsupported"),
    [
        ('Basic realm="a"', True),
        ('Digest realm="a", nonce="b", algorithm=SHA-1', True),
        ('Digest realm="a", nonce="b", qop="auth-int"', True),
        ('Digest nonce="b"', False),
        ('Digest realm="a"', False),
        ('Digest realm="a", realm="a", nonce="b"', False),
        ('Digest realm="a, nonce="b"', False),
        ("", False),
    ],
)
def test_parse_challenge_bad(value: str, unsupported: bool) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_challenge(value)
    assert isinstance(info.value, UnsupportedScheme) is unsupported


# --------------------------------------------------------------------------- credentials

GOOD = (
    'username="bob", realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
    'uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f113b", '
    'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def test_parse_credentials_rfc3261_example() -> None:
    c = parse_credentials("Digest " + GOOD)
    assert c == Credentials(
        username="bob",
        realm="biloxi.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        uri="sip:bob@biloxi.com",
        response="6629fae49393a05397450978507c4ef1",
        algorithm="MD5",
        cnonce="0a4f113b",
        opaque="5ccc069c403ebaf9f0171e9517f40e41",
        qop="auth",
        nc=1,
    )
    assert parse_credentials(c.to_header_value()) == c


@pytest.mark.parametrize(
    ("value", "field", "expected"),
    [
        ("DIGEST " + GOOD, "username", "bob"),
        ("  Digest\t" + GOOD + " ", "username", "bob"),
        ("Digest , " + GOOD + ",,", "username", "bob"),
        ("Digest " + GOOD.replace("nc=00000001", "nc=0000FFfF"), "nc", 0xFFFF),
        ("Digest " + GOOD.replace("nc=00000001", 'nc="0000000a"'), "nc", 10),
        ("Digest " + GOOD.replace("qop=auth", 'qop="AUTH"'), "qop", "auth"),
        ("Digest " + GOOD + ", algorithm=sha-256", "algorithm", "SHA-256"),
        ("Digest " + GOOD + ', x-ext="a, b=c", userhash=false', "username", "bob"),
        ("Digest " + GOOD.replace('"bob"', '"b,o\\"b"'), "username", 'b,o"b'),
        ("Digest " + GOOD.replace('"bob"', "bob"), "username", "bob"),
        ("Digest " + GOOD.replace('username="bob"', 'USERNAME = "bob"'), "username", "bob"),
        ("Digest " + GOOD.replace('"bob"', '"b\u00f6b"'), "username", "b\u00f6b"),
        ("Digest " + GOOD.replace('"bob"', '""'), "username", ""),
    ],
)
def test_parse_credentials_good(value: str, field: str, expected: object) -> None:
    assert getattr(parse_credentials(value), field) == expected


def _without(name: str) -> str:
    return ", ".join(p for p in GOOD.split(", ") if not p.startswith(name + "="))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "Digest",
        "Digest ",
        ",Digest " + GOOD,
        "Digest," + GOOD,
        *("Digest " + _without(n) for n in ("username", "realm", "nonce", "uri", "response")),
        "Digest " + _without("nc"),
        "Digest " + _without("cnonce"),
        "Digest " + _without("qop"),
        "Digest " + GOOD + ', realm="biloxi.com"',
        "Digest " + GOOD + ', Realm="other"',
        "Digest " + GOOD.replace("nc=00000001", "nc=1"),
        "Digest " + GOOD.replace("nc=00000001", "nc=000000001"),
        "Digest " + GOOD.replace("nc=00000001", "nc=0000000g"),
        "Digest " + GOOD.replace("nc=00000001", "nc=-0000001"),
        "Digest " + GOOD.replace("nc=00000001", 'nc=" 0000001"'),
        "Digest " + GOOD.replace('"bob"', '"bob'),
        "Digest " + GOOD + ', opaque2="unterminated',
        "Digest " + GOOD.replace(", ", " "),
        "Digest " + GOOD + " trailing",
        "Digest " + GOOD + ", novalue",
        "Digest " + GOOD + ", =x",
        "Digest " + GOOD + ", a=",
        "Digest " + GOOD + ", a=b/c",
        "Digest " + GOOD + ", Digest " + GOOD,
        "Digest " + GOOD + "\n",
        "Digest " + GOOD.replace('"bob"', '"b\rob"'),
        "Digest " + GOOD + ', x="' + "a" * 9000 + '"',
        "Digest " + GOOD + "".join(f", p{i}=1" for i in range(60)),
    ],
)
def test_parse_credentials_bad(value: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_credentials(value)
    assert not isinstance(info.value, UnsupportedScheme)
    assert info.value.status == 400
    assert info.value.reason


@pytest.mark.parametrize(
    "value",
    [
        "Basic dXNlcjpwYXNz",
        "basic",
        'NTLM realm="x"',
        'Bearer token="x"',
        "Digest " + GOOD + ", algorithm=SHA-1",
        "Digest " + GOOD + ", algorithm=MD5-sess",
        "Digest " + GOOD + ', algorithm="AKAv1-MD5"',
        "Digest " + GOOD.replace("qop=auth", "qop=auth-int"),
    ],
)
def test_parse_credentials_unsupported(value: str) -> None:
    with pytest.raises(UnsupportedScheme) as info:
        parse_credentials(value)
    assert isinstance(info.value, RemoteProtocolError)
    assert info.value.status == 401


def test_nc_without_qop_is_malformed_but_legacy_form_parses() -> None:
    legacy = "Digest " + _without("qop").replace(", nc=00000001", "").replace(
        ', cnonce="0a4f113b"', ""
    )
    assert parse_credentials(legacy).qop is None
    with pytest.raises(RemoteProtocolError):
        parse_credentials("Digest " + _without("qop"))


_FRAGMENTS = st.sampled_from(
    [
        "Digest ",
        "digest",
        "Basic ",
        " ",
        "\t",
        ",",
        "=",
        '"',
        "\\",
        '\\"',
        "username",
        "realm",
        "nonce",
        "uri",
        "response",
        "qop",
        "nc",
        "cnonce",
        "algorithm",
        "auth",
        "auth-int",
        "00000001",
        "SHA-256",
        '"x"',
        '"a,b"',
        "\r\n",
        "\x00",
        "\udcff",
        "\ud800",
        "\u00e9",
    ]
)


@settings(max_examples=500)
@given(st.one_of(st.text(), st.lists(_FRAGMENTS, max_size=40).map("".join)))
def test_parse_only_returns_or_raises_remote_error(value: str) -> None:
    for parse in (parse_credentials, parse_challenge):
        try:
            result = parse(value)
        except RemoteProtocolError as exc:
            assert exc.reason
            continue
        if isinstance(result, Credentials):
            assert not verify_response(result, "0" * 32, "REGISTER")


@settings(max_examples=200)
@given(
    username=st.text(),
    realm=st.text(),
    cnonce=st.text(min_size=1),
    uri=st.text(),
    nc=st.integers(1, 0xFFFFFFFF),
    algorithm=st.sampled_from(ALGORITHMS),
)
def test_round_trip_property(
    username: str, realm: str, cnonce: str, uri: str, nc: int, algorithm: str
) -> None:
    if any(c in s for s in (username, realm, cnonce, uri) for c in "\r\n\x00"):
        return
    challenge = Challenge(realm, "nonce", algorithm)
    value = authorization_value(
        challenge, username=username, password="pw", method="MESSAGE", uri=uri,
        cnonce=cnonce, nc=nc,
    )  # fmt: skip
    creds = parse_credentials(value)
    assert (creds.username, creds.realm, creds.uri, creds.nc) == (username, realm, uri, nc)
    assert verify_response(creds, compute_ha1(username, realm, "pw", algorithm), "MESSAGE")


# --------------------------------------------------------------------------- nonces


def test_nonce_valid_then_stale() -> None:
    f = NonceFactory(SECRET, 30)
    n = f.make(100.0, SALT)
    assert "=" not in n and "+" not in n and "/" not in n
    assert f.check(n, 100.0) is NonceStatus.VALID
    assert f.check(n, 130.0) is NonceStatus.VALID
    assert f.check(n, 130.002) is NonceStatus.STALE
    assert f.check(n, 1e9) is NonceStatus.STALE
    assert f.check(n, 99.0) is NonceStatus.STALE  # issued "in the future"


def test_nonce_from_another_secret_or_garbage_is_invalid() -> None:
    f = NonceFactory(SECRET, 30)
    other = NonceFactory(b"another secret, 16+ octets", 30)
    assert f.check(other.make(100.0, SALT), 100.0) is NonceStatus.INVALID
    n = f.make(100.0, SALT)
    flipped = n[:20] + ("A" if n[20] != "A" else "B") + n[21:]
    for garbage in [
        "",
        "A",
        "!!!!",
        n[:-1],
        n[:-4],
        n + "A",
        n + "=",
        n + "==",
        flipped,
        n.upper(),
        "\u00e9" * 80,
        "A" * 10_000,
        base64.urlsafe_b64encode(b"\x00" * 56).decode(),
    ]:
        assert f.check(garbage, 100.0) is NonceStatus.INVALID, garbage


def test_nonce_has_exactly_one_spelling() -> None:
    f = NonceFactory(SECRET, 30)
    n = f.make(100.0, SALT)  # 56 octets -> 75 chars; the last one has 4 unused bits
    assert len(n) % 4 == 3
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = n[:-1] + alphabet[alphabet.index(n[-1]) ^ 1]
    assert base64.urlsafe_b64decode(twin + "=") == base64.urlsafe_b64decode(n + "=")
    assert f.check(twin, 100.0) is NonceStatus.INVALID


def test_nonces_differ_by_salt_and_time() -> None:
    f = NonceFactory(SECRET, 30)
    assert f.make(1.0, SALT) != f.make(1.0, bytes(16))
    assert f.make(1.0, SALT) != f.make(2.0, SALT)
    assert f.make(1.0, SALT) == f.make(1.0, SALT)  # no hidden randomness


@settings(max_examples=300)
@given(st.text(), st.floats(min_value=0, max_value=1e12))
def test_nonce_check_never_raises(nonce: str, now: float) -> None:
    assert NonceFactory(SECRET, 30).check(nonce, now) is NonceStatus.INVALID


def test_nonce_factory_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        NonceFactory(b"short", 30)
    with pytest.raises(LocalProtocolError):
        NonceFactory(SECRET, 0)
    f = NonceFactory(SECRET, 30)
    with pytest.raises(LocalProtocolError):
        f.make(1.0, b"1234567")
    with pytest.raises(LocalProtocolError):
        f.make(1.0, bytes(33))
    with pytest.raises(LocalProtocolError):
        f.make(-1.0, SALT)
    with pytest.raises(LocalProtocolError):
        f.make(float("nan"), SALT)


# --------------------------------------------------------------------------- nonce counts


def _nonce(t: float, salt: int = 0) -> str:
    return NonceFactory(SECRET, 30).make(t, salt.to_bytes(8, "big"))


def test_nc_must_strictly_increase() -> None:
    c = NonceCounter(10)
    n = _nonce(1.0)
    assert c.accept(n, 1)
    assert not c.accept(n, 1)  # replay
    assert c.accept(n, 5)  # gaps are fine
    assert not c.accept(n, 3)
    assert not c.accept(n, 5)
    assert c.accept(n, 0xFFFFFFFF)
    assert not c.accept(n, 2**32)
    m = _nonce(1.0, 1)
    assert not c.accept(m, 0)
    assert c.accept(m, 1)  # independent of n
    assert not c.accept("not a nonce", 1)
    assert len(c) == 2


def test_evicted_nonce_is_refused_not_reset() -> None:
    c = NonceCounter(2)
    n1, n2, n3 = _nonce(1.0), _nonce(2.0), _nonce(3.0)
    assert c.accept(n2, 1)
    assert c.accept(n1, 1)
    assert c.accept(n3, 1)  # evicts n1, the one issued first
    assert len(c) == 2
    assert not c.accept(n1, 2)  # forgotten: must not restart at nc=1
    assert not c.accept(n1, 1)
    assert not c.accept(_nonce(1.0, 7), 1)  # never seen, but not provably new
    assert c.accept(n2, 2)  # still remembered
    assert c.accept(_nonce(4.0), 1)


def test_not_before_refuses_nonces_from_before_a_restart() -> None:
    c = NonceCounter(10, not_before=50.0)
    assert not c.accept(_nonce(49.0), 1)
    assert not c.accept(_nonce(50.0), 1)
    assert c.accept(_nonce(50.001), 1)


def test_counter_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        NonceCounter(0)


@settings(max_examples=200)
@given(
    st.integers(1, 4),
    st.lists(st.tuples(st.integers(0, 7), st.integers(0, 12)), max_size=80),
)
def test_counter_never_accepts_a_replay(size: int, ops: list[tuple[int, int]]) -> None:
    nonces = [_nonce(float(i), i) for i in range(8)]
    counter = NonceCounter(size)
    accepted: dict[int, list[int]] = {}
    for which, nc in ops:
        if counter.accept(nonces[which], nc):
            history = accepted.setdefault(which, [])
            assert not history or nc > history[-1]
            history.append(nc)
        assert len(counter) <= size
