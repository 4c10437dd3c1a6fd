"""Peer names for mutual TLS, user identities from client certificates, and sips:."""

from __future__ import annotations

from typing import Any

import pytest

from conclave.pki import PkiError, identity_from_peer_cert, requires_tls, verify_peer_name
from conclave.pki.identity import ClientIdentity, peer_names
from conclave.sip.uri import parse_uri


def peercert(*sans: tuple[str, str], cn: str | None = None) -> dict[str, Any]:
    cert: dict[str, Any] = {"subject": ((("commonName", cn or "x"),),)}
    if sans:
        cert["subjectAltName"] = sans
    return cert


@pytest.mark.parametrize(
    ("sans", "expected"),
    [
        ((("DNS", "fe2.example.test"),), "fe2.example.test"),
        ((("DNS", "FE2.Example.Test"),), "fe2.example.test"),
        ((("DNS", "fe2.example.test"),), "FE2.example.test."),
        ((("DNS", "*.example.test"),), "fe2.example.test"),
        ((("DNS", "a.test"), ("IP Address", "192.0.2.7")), "192.0.2.7"),
        ((("IP Address", "2001:DB8:0:0:0:0:0:1"),), "2001:db8::1"),
    ],
)
def test_verify_peer_name_accepts(sans: tuple[tuple[str, str], ...], expected: str) -> None:
    verify_peer_name(peercert(*sans), expected)


@pytest.mark.parametrize(
    ("sans", "expected", "message"),
    [
        ((("DNS", "fe3.example.test"),), "fe2.example.test", "is for fe3.example.test, not"),
        ((("DNS", "*.example.test"),), "example.test", "not example.test"),
        ((("DNS", "*.example.test"),), "a.b.example.test", "not a.b.example.test"),
        ((("DNS", "192.0.2.7"),), "192.0.2.7", "not 192.0.2.7"),  # a DNS SAN is not an IP
        ((("IP Address", "192.0.2.7"),), "192.0.2.8", "not 192.0.2.8"),
        ((("URI", "sip:alice@example.test"),), "example.test", "no names"),
    ],
)
def test_verify_peer_name_refuses(
    sans: tuple[tuple[str, str], ...], expected: str, message: str
) -> None:
    with pytest.raises(PkiError, match=message):
        verify_peer_name(peercert(*sans), expected)


def test_verify_peer_name_without_certificate() -> None:
    with pytest.raises(PkiError, match="no verified certificate"):
        verify_peer_name(None, "fe2.example.test")
    with pytest.raises(PkiError, match="no verified certificate"):
        verify_peer_name({}, "fe2.example.test")


def test_common_name_only_without_san() -> None:
    verify_peer_name(peercert(cn="legacy.example.test"), "legacy.example.test")
    assert peer_names(peercert(cn="legacy.example.test")) == ["legacy.example.test"]
    # With any SAN present the CN is ignored (RFC 6125 §6.4.4).
    with pytest.raises(PkiError):
        verify_peer_name(peercert(("DNS", "a.test"), cn="b.test"), "b.test")


def test_identity_from_client_certificate() -> None:
    cert = peercert(("URI", "sip:alice@Example.Test"), cn="alice@example.test")
    identity = identity_from_peer_cert(cert, "example.test")
    assert identity == ClientIdentity("alice", "example.test")
    assert identity.aor == "sip:alice@example.test"


@pytest.mark.parametrize(
    "cert",
    [
        None,
        {},
        peercert(("URI", "sip:alice@other.test")),
        peercert(("URI", "sip:alice@example.test"), ("URI", "sip:bob@example.test")),
        peercert(("URI", "sip:alice@example.test"), ("DNS", "example.test")),
        peercert(("URI", "sip:example.test")),
        peercert(("URI", "https://example.test/alice")),
        peercert(("URI", "sip:alice@example.test;transport=tls")),
        peercert(("DNS", "sip.example.test")),
    ],
)
def test_no_identity(cert: dict[str, Any] | None) -> None:
    assert identity_from_peer_cert(cert, "example.test") is None


def test_requires_tls() -> None:
    assert requires_tls("sips:alice@example.test")
    assert requires_tls("SIPS:alice@example.test")
    assert not requires_tls("sip:alice@example.test;transport=tls")
    assert requires_tls(parse_uri("sips:alice@example.test"))
    assert not requires_tls(parse_uri("sip:alice@example.test"))
    assert not requires_tls(parse_uri("tel:+15551234567"))
    assert not requires_tls(42)
