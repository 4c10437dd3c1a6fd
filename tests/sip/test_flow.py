"""Flow properties, canonical addresses and the token round trip (conclave.sip.flow)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conclave.sip.flow import Flow, canonical_host

TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]+")  # all within RFC 3261's token


def test_properties() -> None:
    udp = Flow("udp", ("192.0.2.1", 5060), ("0.0.0.0", 5060))
    tcp = Flow("tcp", ("192.0.2.1", 40000), ("192.0.2.9", 5060), 7)
    tls = Flow("tls", ("192.0.2.1", 40000), ("192.0.2.9", 5061), 8)
    assert (udp.reliable, udp.secure) == (False, False)
    assert (tcp.reliable, tcp.secure) == (True, False)
    assert (tls.reliable, tls.secure) == (True, True)
    assert str(tcp) == "tcp:192.0.2.9:5060<->192.0.2.1:40000#7"


@pytest.mark.parametrize(
    "flow",
    [
        Flow("udp", ("192.0.2.1", 5060), ("0.0.0.0", 5060)),
        Flow("tcp", ("10.1.2.3", 65535), ("127.0.0.1", 1), 1),
        Flow("tls", ("2001:db8::1", 5061), ("::", 5061), 2**40 + 5),
        Flow("tls", ("fe80::1%eth0", 5061), ("::ffff:192.0.2.7", 0), (1 << 63) - 1),
        Flow("udp", ("::1", 5060), ("127.0.0.1", 5060)),
    ],
)
def test_token_round_trip(flow: Flow) -> None:
    token = flow.token()
    assert TOKEN_CHARS.fullmatch(token)
    assert Flow.from_token(token) == flow


def test_token_is_compact() -> None:
    assert len(Flow("udp", ("192.0.2.1", 5060), ("192.0.2.2", 5060)).token()) <= 20
    tcp = Flow("tcp", ("192.0.2.1", 40000), ("192.0.2.2", 5060), 3_000_000_000)
    assert len(tcp.token()) <= 28


@pytest.mark.parametrize(
    "token",
    ["", "!", "AAAA AAAA", "A", "AA", "_w", "AQ==", "x" * 300, "wAAAAAAAAAAAAAAA"],
)
def test_bad_tokens_are_rejected(token: str) -> None:
    with pytest.raises(ValueError):
        Flow.from_token(token)


def test_non_canonical_and_truncated_tokens_are_rejected() -> None:
    token = Flow("tcp", ("192.0.2.1", 40000), ("192.0.2.2", 5060), 9).token()
    for bad in (token[:-1], token + "A", token[:-1] + chr(ord(token[-1]) + 1)):
        with pytest.raises(ValueError):
            Flow.from_token(bad)


def test_token_needs_ip_literals() -> None:
    with pytest.raises(ValueError):
        Flow("tcp", ("example.com", 5060), ("127.0.0.1", 5060), 1).token()
    with pytest.raises(ValueError):
        Flow("sctp", ("192.0.2.1", 5060), ("127.0.0.1", 5060), 1).token()


def test_canonical_host() -> None:
    assert canonical_host("2001:DB8:0:0::1") == "2001:db8::1"
    assert canonical_host("127.0.0.1") == "127.0.0.1"
    assert canonical_host("fe80::1%eth0") == "fe80::1%eth0"
    for bad in ("localhost", "1.2.3", "1.2.3.4%eth0", "fe80::1%", ""):
        with pytest.raises(ValueError):
            canonical_host(bad)


@given(st.text(max_size=80))
def test_any_string_parses_or_raises_value_error(text: str) -> None:
    try:
        flow = Flow.from_token(text)
    except ValueError:
        return
    assert flow.token() == text


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: canonical_host(str(a)))
addresses = st.tuples(ipv4 | ipv6, st.integers(0, 65535))


@given(
    st.sampled_from(["udp", "tcp", "tls"]),
    addresses,
    addresses,
    st.integers(0, (1 << 63) - 1),
)
def test_every_flow_round_trips(
    transport: str, remote: tuple[str, int], local: tuple[str, int], conn_id: int
) -> None:
    flow = Flow(transport, remote, local, conn_id)
    assert Flow.from_token(flow.token()) == flow


@given(st.binary(min_size=16, max_size=16))
def test_canonical_text_is_what_the_socket_layer_prints(packed: bytes) -> None:
    # conclave.sip is sans-IO, so it formats addresses with ipaddress; the
    # text must still equal inet_ntop's, which the event loops report.
    import socket

    text = socket.inet_ntop(socket.AF_INET6, packed)
    assert canonical_host(text) == text
    sparse = bytes(b if i % 3 else 0 for i, b in enumerate(packed))
    text = socket.inet_ntop(socket.AF_INET6, sparse)
    assert canonical_host(text) == text
