"""Hypothesis properties of the parser: round trip, and parse-or-RemoteProtocolError."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz import mutate
from conclave.sip.errors import RemoteProtocolError
from conclave.sip.headers import Headers
from conclave.sip.lint import judge
from conclave.sip.message import Request, Response
from conclave.sip.parser import parse_message
from conclave.sip.uri import parse_uri

from .torture import load_cases

TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(TOKEN_ALPHABET, min_size=1, max_size=12)
hosts = st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z][a-z0-9]{0,8}){0,3}", fullmatch=True)
users = st.from_regex(r"[a-zA-Z0-9_.!~*'()&=+$,;?/-]{1,12}", fullmatch=True)
# Header values: printable text (any script), no CR/LF, no edge whitespace.
values = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=0, max_size=40
).map(lambda s: s.strip(" \t\u00a0\u2000\u3000").replace("\r", "").replace("\n", ""))


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(st.sampled_from(["INVITE", "REGISTER", "MESSAGE", "OPTIONS"]) | tokens)
    uri = parse_uri(f"sip:{draw(users)}@{draw(hosts)}")
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP {draw(hosts)}:5060;branch=z9hG4bK{draw(tokens)}")
    h.add("Max-Forwards", str(draw(st.integers(0, 255))))
    h.add("From", f"<sip:{draw(users)}@{draw(hosts)}>;tag={draw(tokens)}")
    h.add("To", f"<sip:{draw(users)}@{draw(hosts)}>")
    h.add("Call-ID", draw(tokens))
    h.add("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")
    for _ in range(draw(st.integers(0, 5))):
        h.add("X-" + draw(tokens), draw(values).strip())
    body = draw(st.binary(max_size=200))
    h.add("Content-Length", str(len(body)))
    return Request(method, uri, h, body)


@st.composite
def responses(draw: st.DrawFn) -> Response:
    h = Headers()
    h.add("Via", f"SIP/2.0/TCP {draw(hosts)};branch=z9hG4bK{draw(tokens)};rport=5060")
    h.add("Call-ID", draw(tokens))
    h.add("CSeq", f"{draw(st.integers(0, 2**31 - 1))} INVITE")
    h.add("Content-Length", "0")
    reason = draw(values)
    return Response(draw(st.integers(100, 699)), reason, h, b"")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_request_roundtrip(req: Request) -> None:
    assert parse_message(req.serialise()) == req
    assert parse_message(req.serialise(), datagram=False) == req


@settings(max_examples=200)
@given(responses())
def test_response_roundtrip(resp: Response) -> None:
    assert parse_message(resp.serialise()) == resp


def _check(data: bytes) -> None:
    for datagram in (True, False):
        try:
            parse_message(data, datagram=datagram)
        except RemoteProtocolError as exc:
            assert 400 <= exc.status <= 599 and exc.reason
    assert judge(data).kind in ("ok", "malformed", "reject")


SEEDS = [c.path.read_bytes() for c in load_cases()]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 4))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == 0 and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == 1:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == 2:
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == 3:
            data[pos:pos] = draw(st.sampled_from([b"\r\n", b",", b";", b"<", b'"', b"%", b" "]))
        else:
            end = min(len(data), pos + draw(st.integers(1, 64)))
            data[pos:pos] = data[pos:end]
    return bytes(data)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutations_parse_or_remote_error(data: bytes) -> None:
    _check(data)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_remote_error(data: bytes) -> None:
    _check(data)


@pytest.mark.fuzz
def test_bounded_fuzz_run() -> None:
    """A deterministic, bounded fuzz loop: 20,000 mutations of the corpus (the
    same mutations the bench sends a running server a million of: bench/fuzz.py)."""
    rng = random.Random(4475)
    for _ in range(20_000):
        _check(mutate(rng, rng.choice(SEEDS)))
